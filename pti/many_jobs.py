"""The pieces of ``pti.many.invert_many`` that every backend shares: photos as jobs keyed by content hash, the JSONL
manifest, the output-folder lock, the retry rule and the worker that inverts one photo.

A worker gets a photo's *bytes* and returns its result files as bytes, so the machine that runs it needs neither the
input folder nor the output folder: only the driver (the process that called ``invert_many``) reads photos, writes
results and appends to the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .atomic import replace_atomically
from .delta import DELTA_MODES, save_delta
from .hashing import state_dict_hash
from .image import decode_image
from .networks import Generator
from .pipeline import InversionResult, invert, invert_each
from .saved_result import DELTA_FILE, PIVOT_FILE

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
LOCK_FILE = ".invert-many.lock"
MANIFEST_FORMAT = "pti-many"
MANIFEST_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
KEY_LENGTH = 12  # hex characters of the SHA-256 in a photo's result folder name


class ManyRefused(ValueError):
    """``invert_many`` will not start on this output folder; the message says why and what to do."""


class ForeignManifest(ManyRefused):
    """The output folder's manifest was made with another model or other settings."""


class FolderBusy(ManyRefused):
    """Another run holds the output folder's lock."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class Job:
    """One photo to invert: ``key`` is the SHA-256 of its bytes; ``sources`` every input path with those bytes."""

    key: str
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        """The result folder's name: the first photo's file name (letters, digits, ``_ . -``) and the key's first
        ``KEY_LENGTH`` hex digits, e.g. ``IMG_0042-c0a36fa35d52``: a valid saved-result name
        (``pti.saved_result.check_result_name``), so ComfyUI's Load PTI lists it."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.sources[0]).stem).strip("._-")[:60] or "photo"
        return f"{stem}-{self.key[:KEY_LENGTH]}"

    def read(self) -> bytes:
        """The photo's bytes, refused when the file changed since it was listed (its key would be wrong)."""
        data = Path(self.sources[0]).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.key:
            raise ValueError(f"{self.sources[0]} changed while the batch ran; run again to pick up the new version")
        return data


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given and folders as their image files (``IMAGE_SUFFIXES``, not recursive, sorted by name).

    A missing path or a folder without images is refused before anything runs (a typo, not a bad photo).
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise FileNotFoundError(f"no images in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths += images
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}; give photo files or folders of photos")
    if not paths:
        raise ValueError("no inputs: give photo files or folders of photos")
    return paths


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_jobs(paths: Iterable[Path]) -> list[Job]:
    """One job per distinct content, in the order the contents first appear. A file that cannot even be read keeps
    a job of its own (keyed by its path), so it becomes a failed row like any other bad photo."""
    sources: dict[str, list[str]] = {}
    for path in paths:
        try:
            key = _file_sha256(path)
        except OSError:
            key = "unreadable-" + hashlib.sha256(str(path).encode()).hexdigest()
        sources.setdefault(key, []).append(str(path))
    return [Job(key, tuple(names)) for key, names in sources.items()]


# -------------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ManySettings:
    """What decides a photo's result (the manifest header records it; a folder holds results of one setting)."""

    space: str = "w"
    preset: str = "fast"
    steps_pivot: int | None = None
    steps_tune: int | None = None
    target_psnr: float | None = None
    locality: bool = False
    rank: int = 0
    seed: int = 0
    align: str | None = None  # a face detector name (``pti.align.DETECTORS``); None: centre crop as ``invert``
    delta_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.delta_mode not in DELTA_MODES:
            raise ValueError(f"delta_mode must be one of {DELTA_MODES}, got {self.delta_mode!r}")
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")


def describe_init(init: Any) -> str:
    """How projection starts, for the manifest header: ``none`` or the encoder's weight hash."""
    if init is None:
        return "none"
    if isinstance(init, torch.nn.Module):
        return f"encoder:{state_dict_hash(init)}"
    raise ValueError(f"init must be an encoder (pti.load_encoder) or None, got {type(init).__name__}")


def manifest_header(G: Generator, settings: ManySettings, init: Any) -> dict[str, Any]:
    """The manifest's first row: format, the base model's hash and every setting that shapes a result."""
    return {
        "type": "header",
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "model_hash": state_dict_hash(G),
        "resolution": G.img_resolution,
        "settings": {**dataclasses.asdict(settings), "init": describe_init(init)},
        "created": _now(),
    }


# -------------------------------------------------------------------------------------------------------- manifest


class Manifest:
    """``manifest.jsonl``: a header row, then one row per finished photo (``done`` or ``failed``), appended and
    flushed to disk as each photo finishes; the last row of a key is its state."""

    def __init__(self, path: Path, header: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.header = header
        self.rows = rows

    @classmethod
    def open(cls, folder: Path, header: dict[str, Any], force: bool = False) -> Manifest:
        """The folder's manifest, created with ``header`` when absent. One made with another model or settings is
        refused (``ForeignManifest``), or with ``force`` kept aside as ``manifest.replaced-<time>.jsonl`` and
        started anew."""
        path = folder / MANIFEST_FILE
        if not path.is_file():
            return cls._create(path, header)
        old_header, rows, complete = _read_manifest(path)
        problem = _header_mismatch(old_header, header)
        if problem is None:
            if complete < path.stat().st_size:  # a run killed while appending: cut its half-written last row
                with open(path, "r+b") as f:
                    f.truncate(complete)
                log.warning("%s: dropped a half-written last row", path)
            return cls(path, old_header, rows)
        if not force:
            raise ForeignManifest(
                f"{folder} holds results of {problem}; use another output folder, or --force (force=True) to start "
                "this one over (the old manifest is kept aside, old results are replaced as photos finish)"
            )
        kept = folder / f"manifest.replaced-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.jsonl"
        os.replace(path, kept)
        log.warning("%s: manifest of %s moved to %s", folder, problem, kept.name)
        return cls._create(path, header)

    @classmethod
    def _create(cls, path: Path, header: dict[str, Any]) -> Manifest:
        replace_atomically({path: lambda temp: temp.write_text(json.dumps(header, sort_keys=True) + "\n")})
        return cls(path, header, {})

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row`` as one line, on disk before this returns."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row

    def status(self, job: Job, folder: Path) -> str | None:
        """``done`` (its files still present), ``failed``, or None when the photo has not finished."""
        row = self.rows.get(job.key)
        if row is None:
            return None
        if row["status"] == "done":
            outputs = row.get("outputs", {}).values()
            return "done" if outputs and all((folder / p).is_file() for p in outputs) else None
        return row["status"]


def _read_manifest(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], int]:
    """Header, the latest row per key, and the length of the complete lines (a half-written last line, from a run
    killed while appending, is not read)."""
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    rows: dict[str, dict[str, Any]] = {}
    header: dict[str, Any] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ManyRefused(f"{path} line {number} is not JSON: the manifest was edited or damaged") from None
        if number == 1:
            header = row if isinstance(row, dict) else {}
        elif isinstance(row, dict) and "key" in row:
            rows[row["key"]] = row
    if header.get("format") != MANIFEST_FORMAT:
        raise ManyRefused(f"{path} is not an invert-many manifest (format {header.get('format')!r})")
    return header, rows, len(data)


def _header_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two headers, in words, or None when a run may continue the old manifest."""
    if old.get("model_hash") != new["model_hash"]:
        return f"another model (base hash {old.get('model_hash')}, this one is {new['model_hash']})"
    before, after = old.get("settings", {}), new["settings"]
    changed = [
        f"{name} {before.get(name)!r} -> {after.get(name)!r}" for name in after if before.get(name) != after[name]
    ]
    return f"other settings ({', '.join(changed)})" if changed else None


# ------------------------------------------------------------------------------------------------------------ lock


def _lock(f) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the output folder for this run; a second run on it (any process) gets ``FolderBusy``. The operating
    system drops the lock when the holder exits, even when killed, so there is never a stale lock to delete."""
    path = folder / LOCK_FILE
    f = open(path, "a+", encoding="utf-8")
    try:
        f.seek(0)
        try:
            _lock(f)
        except OSError:
            holder = path.read_text(encoding="utf-8").strip() or "another process"
            raise FolderBusy(
                f"{folder} is in use by another invert-many run ({holder}); wait for it to finish or choose "
                "another output folder"
            ) from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
        f.flush()
        yield
    finally:
        f.close()


# ----------------------------------------------------------------------------------------------------- retry rule


class RetryQueue:
    """Photos waiting to run. A failed attempt goes to the back of the queue (others run first) until it has been
    tried ``1 + retries`` times; then it is final."""

    def __init__(self, jobs: Iterable[Job], retries: int) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = retries
        self.waiting: deque[tuple[Job, int]] = deque((job, 1) for job in jobs)

    def __len__(self) -> int:
        return len(self.waiting)

    def take(self, count: int) -> list[tuple[Job, int]]:
        """Up to ``count`` next jobs, each with its attempt number (1 = first try)."""
        return [self.waiting.popleft() for _ in range(min(count, len(self.waiting)))]

    def settle(self, job: Job, attempt: int, outcome: dict[str, Any]) -> bool:
        """True when ``outcome`` is final (success, or the last allowed failure); else the job is queued again."""
        if outcome["ok"] or attempt > self.retries:
            return True
        log.warning("%s (attempt %d of %d): %s", job.sources[0], attempt, self.retries + 1, outcome["error"])
        self.waiting.append((job, attempt + 1))
        return False


# ---------------------------------------------------------------------------------------------------------- worker


class PhotoWorker:
    """Holds one generator (and encoder) on one device and inverts photos sent to it as bytes.

    The local backend runs one in the calling process; the Ray backend runs one per actor.
    """

    def __init__(self, G: Generator, settings: ManySettings, init: Any = None, device: str | None = None) -> None:
        self.device = torch.device(device) if device else next(G.parameters()).device
        self.G = G.to(self.device).eval()
        self.init = init.to(self.device).eval() if isinstance(init, torch.nn.Module) else None
        self.settings = settings
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{self.device}"

    def run(self, data: bytes | None, name: str, read_error: str | None = None) -> dict[str, Any]:
        """Invert one photo. Returns ``{"ok": True, "files", "metrics", "steps", "seconds", "worker"}`` or
        ``{"ok": False, "error", "seconds", "worker"}``: a bad photo never raises."""
        return self.run_batch([(data, name, read_error)])[0]

    def run_batch(self, items: list[tuple[bytes | None, str, str | None]]) -> list[dict[str, Any]]:
        """``run`` for several photos ``(data, name, read_error)``: each is read (and aligned) alone, then those
        that could be are inverted together (``pti.pipeline.invert_each``: one tuning batch). When the batch fails
        as a whole (out of memory, say), its photos run one at a time, so only a photo that fails alone fails."""
        outcomes: dict[int, dict[str, Any]] = {}
        photos: dict[int, tuple[torch.Tensor, str]] = {}
        for index, (data, name, problem) in enumerate(items):
            started = time.perf_counter()
            try:
                photos[index] = (self._photo(data, name, problem), name)
            except Exception as exc:
                outcomes[index] = self._failed(exc, name, started)
        if len(photos) > 1:
            try:
                results = invert_each(
                    self.G, [photo for photo, _ in photos.values()], init=self.init, **self._options()
                )
            except Exception as exc:
                log.warning("tuning %d photos together failed (%s); running them one at a time", len(photos), exc)
            else:
                for index, result in zip(photos, results):
                    seconds = result.metrics["projection_seconds"] + result.metrics["tuning_seconds"]
                    outcomes[index] = self._succeeded(result, seconds)
                photos = {}
        for index, (photo, name) in photos.items():
            started = time.perf_counter()
            try:
                rank = {"rank": self.settings.rank} if self.settings.rank else None
                result = invert(
                    self.G,
                    photo,
                    init=self.init,
                    locality=self.settings.locality,
                    tuning_options=rank,
                    **self._options(),
                )
                outcomes[index] = self._succeeded(result, time.perf_counter() - started)
            except Exception as exc:  # a bad photo is a failed row, never a stopped batch
                outcomes[index] = self._failed(exc, name, started)
        return [outcomes[index] for index in range(len(items))]

    def _options(self) -> dict[str, Any]:
        s = self.settings
        return {"space": s.space, "steps_pivot": s.steps_pivot, "steps_tune": s.steps_tune,
                "target_psnr": s.target_psnr, "seed": s.seed, "preset": s.preset}  # fmt: skip

    def _photo(self, data: bytes | None, name: str, problem: str | None) -> torch.Tensor:
        if data is None:
            raise OSError(problem or f"cannot read {name}")
        photo = decode_image(data, name)
        if self.settings.align is not None:
            from .align import align_face  # the detectors load only when asked for

            photo, _ = align_face(photo, self.G.img_resolution, detector=self.settings.align)
        return photo

    def _failed(self, exc: Exception, name: str, started: float) -> dict[str, Any]:
        log.debug("%s failed", name, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
        return {
            "ok": False,
            "error": error,
            "seconds": round(time.perf_counter() - started, 3),
            "worker": self.identity,
        }

    def _succeeded(self, result: InversionResult, seconds: float) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="pti-many-") as tmp:
            pivot, delta = Path(tmp) / PIVOT_FILE, Path(tmp) / DELTA_FILE
            result.pivot.save(pivot)
            save_delta(result.tuned, self.G, delta, mode=self.settings.delta_mode, provenance=result.metrics)
            files = {"pivot": pivot.read_bytes(), "delta": delta.read_bytes()}
        m = result.metrics
        return {
            "ok": True,
            "files": files,
            "metrics": {"pivot": m["pivot"], "tuned": m["tuned"]},
            "steps": {"projection": m["projection_steps"], "tuning": m["tuning_steps"]},
            "tuned_together": m.get("tuned_together", 1),
            "seconds": round(seconds, 3),
            "worker": self.identity,
        }


def read_photos(jobs: list[tuple[Job, int]]) -> list[tuple[bytes | None, str, str | None]]:
    """What ``PhotoWorker.run_batch`` takes for ``jobs``: each photo's bytes and name, or None and why they cannot
    be read (the worker turns that into a failed attempt)."""
    items = []
    for job, _ in jobs:
        try:
            items.append((job.read(), job.sources[0], None))
        except (OSError, ValueError) as exc:
            items.append((None, job.sources[0], f"{type(exc).__name__}: {exc}"))
    return items


def outcome_row(job: Job, attempt: int, outcome: dict[str, Any], outputs: dict[str, str]) -> dict[str, Any]:
    """The manifest row for a job's final outcome."""
    row = {
        "type": "photo",
        "key": job.key,
        "name": job.name,
        "sources": list(job.sources),
        "status": "done" if outcome["ok"] else "failed",
        "attempts": attempt,
        "seconds": outcome.get("seconds"),
        "worker": outcome.get("worker"),
        "finished": _now(),
    }
    if outcome["ok"]:
        row.update(
            steps=outcome["steps"],
            tuned_together=outcome["tuned_together"],
            metrics=outcome["metrics"],
            outputs=outputs,
        )
    else:
        row["error"] = outcome["error"]
    return row


def write_outputs(folder: Path, job: Job, files: dict[str, bytes]) -> dict[str, str]:
    """Put a photo's result files in ``folder/<job name>/`` together and atomically (the ``pti.saved_result``
    layout, so ``load_result`` and ComfyUI's Load PTI read them); returns name -> path relative to ``folder``."""
    target = folder / job.name
    paths = {"pivot": target / PIVOT_FILE, "delta": target / DELTA_FILE}
    replace_atomically({paths[name]: (lambda temp, data=data: temp.write_bytes(data)) for name, data in files.items()})
    return {name: path.relative_to(folder).as_posix() for name, path in paths.items()}

"""Invert many photos into one output folder, resumably: ``invert_many`` (and ``python -m pti invert-many``).

Each distinct photo (by SHA-256 of its bytes) is one job. Its result, ``<photo name>-<12 hex of the hash>/``
``pivot.safetensors`` + ``delta.safetensors`` (the ``pti.saved_result`` layout: ``load_result(folder, base)``
and ComfyUI's Load PTI read it), is written atomically, and only then is its ``done`` row appended to
``manifest.jsonl``. A photo that
fails (unreadable, no face with ``align``, any exception) is tried again after the others, up to ``retries`` more
times, then gets a ``failed`` row with the reason while the rest go on. Running again skips done photos (and failed
ones unless ``retry_failed``), so a killed run resumes where it stopped. docs/many-photos.md has the details.

Backends: ``local`` runs the photos one after another in this process; ``ray`` (``pti.many_ray``) spreads them
over Ray actors, one per GPU or CPU slot. Both follow the same manifest and retry rules: only this process writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .many_jobs import (
    Job,
    Manifest,
    ManySettings,
    PhotoWorker,
    RetryQueue,
    expand_inputs,
    folder_lock,
    make_jobs,
    manifest_header,
    outcome_row,
    read_photos,
    write_outputs,
)
from .networks import Generator

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
RowFn = Callable[[dict[str, Any]], None]


@dataclass
class ManySummary:
    """What a run did: the rows it appended, and the photos it left alone (already done, or failed before)."""

    folder: Path
    manifest: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped_done: list[Job] = field(default_factory=list)
    skipped_failed: list[Job] = field(default_factory=list)

    @property
    def done(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "done"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "failed"]


class _Recorder:
    """The driver's half of a job: write the files, then append the row (so ``done`` always has its files)."""

    def __init__(self, folder: Path, manifest: Manifest, summary: ManySummary, on_row: RowFn | None) -> None:
        self.folder, self.manifest, self.summary, self.on_row = folder, manifest, summary, on_row

    def __call__(self, job: Job, attempt: int, outcome: dict[str, Any]) -> None:
        outputs = write_outputs(self.folder, job, outcome["files"]) if outcome["ok"] else {}
        row = outcome_row(job, attempt, outcome, outputs)
        self.manifest.append(row)
        self.summary.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)


def invert_many(
    G: Generator,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    space: str = "w",
    preset: str = "fast",
    steps_pivot: int | None = None,
    steps_tune: int | None = None,
    target_psnr: float | None = None,
    locality: bool = False,
    rank: int = 0,
    seed: int = 0,
    align: str | None = None,
    delta_mode: str = "auto",
    init: Any = None,
    retries: int = 2,
    retry_failed: bool = False,
    force: bool = False,
    backend: str = "local",
    address: str | None = None,
    actors: int | None = None,
    batch: int = 1,
    on_row: RowFn | None = None,
) -> ManySummary:
    """Invert every photo of ``inputs`` (files, and folders: their images, sorted) against ``G`` into ``out_dir``.

    The settings are those of ``pti.pipeline.invert`` (``rank``: low-rank tuning, a small exact delta; ``align``: a
    face detector name to FFHQ-align each photo first, a faceless photo then fails). ``init``: an encoder or None.
    ``retries``: extra tries of a failing photo; ``retry_failed``: run photos that failed in an earlier run again;
    ``force``: start over a folder whose manifest has another model or settings (else ``ForeignManifest``).
    ``backend="ray"``: see ``pti.many_ray.run_on_ray`` (``address``, ``actors``). ``batch``: photos each worker
    tunes at once (``pti.pipeline.invert_each``; equal to one at a time up to float32 rounding; full-weight tuning
    without locality). ``on_row(row)`` is called after each photo's row is on disk. A second run on the same folder
    meanwhile raises ``FolderBusy``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if batch > 1 and (rank or locality):
        raise ValueError("batch > 1 tunes every weight without locality; drop rank/locality or use batch=1")
    settings = ManySettings(
        space, preset, steps_pivot, steps_tune, target_psnr, locality, rank, seed, align, delta_mode
    )
    jobs = make_jobs(expand_inputs(inputs))
    header = manifest_header(G, settings, init)
    folder = Path(out_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        manifest = Manifest.open(folder, header, force=force)
        summary = ManySummary(folder, manifest.path)
        pending = []
        for job in jobs:
            state = manifest.status(job, folder)
            if state == "done":
                summary.skipped_done.append(job)
            elif state == "failed" and not retry_failed:
                summary.skipped_failed.append(job)
            else:
                pending.append(job)
        log.info(
            "invert-many: %d photos, %d to run, %d done before, %d failed before",
            len(jobs), len(pending), len(summary.skipped_done), len(summary.skipped_failed),
        )  # fmt: skip
        queue = RetryQueue(pending, retries)
        record = _Recorder(folder, manifest, summary, on_row)
        if not pending:
            return summary
        if backend == "ray":
            from .many_ray import run_on_ray

            run_on_ray(G, settings, init, queue, record, address=address, actors=actors, batch=batch)
        else:
            run_locally(PhotoWorker(G, settings, init), queue, record, batch)
    return summary


def run_locally(
    worker: PhotoWorker, queue: RetryQueue, record: Callable[[Job, int, dict[str, Any]], None], batch: int = 1
) -> None:
    """Run the queue's photos on ``worker``, ``batch`` at a time, recording each final outcome."""
    while queue:
        jobs = queue.take(batch)
        for (job, attempt), outcome in zip(jobs, worker.run_batch(read_photos(jobs))):
            if queue.settle(job, attempt, outcome):
                record(job, attempt, outcome)

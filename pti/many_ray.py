"""The Ray backend of ``invert_many``: photos spread over Ray actors, across GPUs and machines.

Optional: ``pip install "comfyui-pti[ray]"`` on the driver and on every node (a ComfyUI install never needs it).
Each actor holds the generator once, on its GPU (or on the CPU when the cluster has none) and takes one photo at a
time; the driver hands the next photo to whichever actor finishes first, so a slow machine gets fewer photos (no
static shards). Photos travel to the actors as bytes and results come back as bytes: the driver alone reads the
inputs and writes the output folder and its manifest, by the same rules as the local backend (``pti.many``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from .many_jobs import Job, ManySettings, PhotoWorker, RetryQueue, read_photos
from .networks import Generator

log = logging.getLogger(__name__)

Record = Callable[[Job, int, dict[str, Any]], None]


RAY_MISSING = (
    'the ray backend needs Ray: pip install "comfyui-pti[ray]" (or pip install "ray>=2.9") on this machine and every '
    "node of the cluster"
)


class RayUnavailable(ValueError):
    """``backend="ray"`` without Ray installed."""


def require_ray():
    """The ``ray`` module, or ``RayUnavailable`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(RAY_MISSING) from None
    return ray


class _ActorWorker(PhotoWorker):
    """A ``PhotoWorker`` inside a Ray actor: picks its device (the GPU Ray gave it, else the CPU) and thread count."""

    def __init__(self, G: Generator, settings: ManySettings, init: Any, cpus: int) -> None:
        torch.set_num_threads(max(1, cpus))
        super().__init__(G, settings, init, "cuda" if torch.cuda.is_available() else "cpu")


def run_on_ray(
    G: Generator,
    settings: ManySettings,
    init: Any,
    queue: RetryQueue,
    record: Record,
    address: str | None = None,
    actors: int | None = None,
    batch: int = 1,
) -> None:
    """Run the queue's photos on Ray actors, recording each final outcome in this process as it arrives.

    Connects to ``address`` (``"auto"``: the cluster this machine belongs to; None: an existing ``ray.init`` of this
    process, else ``RAY_ADDRESS`` or a new local cluster, shut down afterwards). ``actors``: how many (default: one
    per GPU of the cluster, or one per CPU when it has none; never more than there are photos). An actor that dies
    counts as a failed attempt of its photos and is replaced. ``batch``: photos an actor takes at once (tuned
    together).
    """
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False)
    elif address is not None:
        log.info("ray is already initialised in this process; ignoring address=%r", address)
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        count = min(actors or gpus or cpus, -(-len(queue) // batch))
        if count < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        threads = 1 if gpus else max(1, cpus // count)
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": threads}
        log.info("ray: %d actors (%s)", count, "one GPU each" if gpus else f"{threads} CPU each")
        model, encoder = ray.put(_on_cpu(G)), ray.put(_on_cpu(init))  # into the object store once
        actor_class = ray.remote(_ActorWorker).options(**options)

        def new_actor():
            return actor_class.remote(model, settings, encoder, threads)

        _drive(ray, [new_actor() for _ in range(count)], new_actor, queue, record, batch)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, idle: list, new_actor: Callable[[], Any], queue: RetryQueue, record: Record, batch: int) -> None:
    """Keep every actor busy with ``batch`` photos until the queue is empty and every result is in."""
    running: dict[Any, tuple[Any, list[tuple[Job, int]]]] = {}
    while queue or running:
        while queue and idle:
            actor, jobs = idle.pop(), queue.take(batch)
            running[actor.run_batch.remote(read_photos(jobs))] = (actor, jobs)
        (ready,), _ = ray.wait(list(running), num_returns=1)
        actor, jobs = running.pop(ready)
        try:
            outcomes = ray.get(ready)
            idle.append(actor)
        except ray.exceptions.RayActorError as exc:
            error = f"the Ray worker died: {exc}".splitlines()[0]
            outcomes = [{"ok": False, "error": error, "seconds": None}] * len(jobs)
            ray.kill(actor)
            idle.append(new_actor())
        for (job, attempt), outcome in zip(jobs, outcomes):
            if queue.settle(job, attempt, outcome):
                record(job, attempt, outcome)


def _on_cpu(module: Any) -> Any:
    """``module`` itself when it is on the CPU (or None), else a CPU copy: actors may sit on machines without GPUs."""
    if not isinstance(module, torch.nn.Module) or all(not t.is_cuda for t in module.state_dict().values()):
        return module
    return copy.deepcopy(module).cpu()

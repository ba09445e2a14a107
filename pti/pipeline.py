"""The main job in one call: photo -> pivot -> tuned generator -> files (used by ``python -m pti invert``).

``invert`` runs both PTI stages and measures the result; ``write_inversion`` writes what a user keeps: the target
at model resolution, G(pivot), G'(pivot), a side-by-side comparison, the pivot latent, the tuned generator as a
compact delta against the base, and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .delta import save_delta
from .hashing import state_dict_hash
from .image import GeneratorImages, as_targets, make_comparison, save_image
from .latent import Latent, synthesize
from .metrics import summarize
from .networks import Generator
from .projection import project, projection_settings
from .runtime import CancelFn, ProgressFn
from .tune import pivotal_tune, pivotal_tune_each, tuning_settings

StageProgress = Callable[[str, int], ProgressFn | None]


@dataclass
class InversionResult:
    """Everything ``invert`` produced; images are ``[1, 3, R, R]`` in ``[-1, 1]`` on the CPU."""

    target: torch.Tensor
    pivot: Latent
    tuned: Generator
    pivot_image: torch.Tensor
    tuned_image: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)


def invert(
    G: Generator,
    image: Any,
    space: str = "w",
    steps_pivot: int | None = None,
    steps_tune: int | None = None,
    target_psnr: float | None = None,
    locality: bool = False,
    seed: int = 0,
    preset: str = "fast",
    stage_progress: StageProgress | None = None,
    cancel: CancelFn | None = None,
    init: Latent | torch.nn.Module | None = None,
    tuning_options: dict[str, Any] | None = None,
) -> InversionResult:
    """Project ``image`` (one photo; see ``project`` for accepted types), tune G around the pivot, measure both.

    ``preset`` (``"fast"`` or ``"reference"``) picks the defaults of both stages; ``steps_*`` and ``target_psnr``
    (tuning's stopping rule, dB) override them.
    ``stage_progress(stage, total_steps)`` may return a progress callback for ``"projection"`` and ``"tuning"``.
    ``init``: where projection starts: an encoder (``pti.load_encoder``; run once on the photo) or a ``Latent``
    (a saved pivot, the previous frame); it then takes the preset's ``init_steps`` unless ``steps_pivot`` is given,
    and ``steps_pivot=0`` skips optimisation (encoder-only pivot). ``tuning_options``: other fields of
    ``TuningSettings`` to override (e.g. ``{"edit_consistency": 0}``).
    """
    device = next(G.parameters()).device
    target = as_targets(image, G.img_resolution, device)
    if target.shape[0] != 1:
        raise ValueError(f"invert takes one photo, got {target.shape[0]}; use project/pivotal_tune for batches")
    settings = projection_settings(preset, steps=steps_pivot)
    pivot_steps = settings.init_steps if init is not None and steps_pivot is None else settings.steps
    tune_steps = tuning_settings(preset, steps=steps_tune).steps

    def callback(stage: str, total: int) -> ProgressFn | None:
        return stage_progress(stage, total) if stage_progress is not None else None

    started = time.perf_counter()
    start = encode(init, target) if isinstance(init, torch.nn.Module) else init
    encoded = time.perf_counter()
    pivot = project(
        G, GeneratorImages(target), space=space, steps=steps_pivot, seed=seed, preset=preset, init=start,
        progress=callback("projection", pivot_steps), cancel=cancel,
    )  # fmt: skip
    projected = time.perf_counter()
    tuned = pivotal_tune(
        G, GeneratorImages(target), pivot, steps=steps_tune, target_psnr=target_psnr, locality=locality, seed=seed,
        preset=preset, progress=callback("tuning", tune_steps), cancel=cancel, **(tuning_options or {}),
    )  # fmt: skip
    finished = time.perf_counter()

    timings = {"encoder": encoded - started, "projection": projected - started, "tuning": finished - projected}
    return _measured(G, target, pivot, tuned, start, timings, space, preset, locality, seed)


def _measured(
    G: Generator,
    target: torch.Tensor,
    pivot: Latent,
    tuned: Generator,
    start: Latent | None,
    seconds: dict[str, float],
    space: str,
    preset: str,
    locality: bool,
    seed: int,
) -> InversionResult:
    """The result of one photo's inversion, with G(pivot) and G'(pivot) rendered and measured against it."""
    pivot_image = synthesize(G, pivot).cpu()
    tuned_image = synthesize(tuned, pivot).cpu()
    target = target.cpu()
    metrics = {
        "pivot": summarize(pivot_image, target),
        "tuned": summarize(tuned_image, target),
        "projection_steps": pivot.meta["steps"],
        "tuning_steps": tuned.tuning_info["steps"],
        "init": None if start is None else start.meta.get("source", "latent"),
        "encoder_seconds": round(seconds["encoder"], 3),
        "projection_seconds": round(seconds["projection"], 3),
        "tuning_seconds": round(seconds["tuning"], 3),
        "space": space,
        "preset": preset,
        "locality": locality,
        "seed": seed,
        "base_hash": state_dict_hash(G),
    }
    return InversionResult(target, pivot, tuned, pivot_image, tuned_image, metrics)


def invert_each(
    G: Generator,
    images: list[Any],
    space: str = "w",
    steps_pivot: int | None = None,
    steps_tune: int | None = None,
    target_psnr: float | None = None,
    seed: int = 0,
    preset: str = "fast",
    init: torch.nn.Module | None = None,
    cancel: CancelFn | None = None,
) -> list[InversionResult]:
    """``[invert(G, image, ...) for image in images]`` with the tuning of all photos in one batch
    (``pivotal_tune_each``: one forward/backward per step, each photo its own weights and its own stopping step).

    Each photo is projected on its own, exactly as ``invert`` does; the tuned weights equal the one-by-one results
    up to float32 summation order. Full-weight tuning without locality (``pivotal_tune_each`` says why). A photo's
    ``tuning_seconds`` is its share of the batch; ``metrics["tuned_together"]`` the batch size.
    """
    device = next(G.parameters()).device
    targets = [as_targets(image, G.img_resolution, device) for image in images]
    if any(target.shape[0] != 1 for target in targets):
        raise ValueError("invert_each takes a list of single photos")
    pivots, starts, seconds = [], [], []
    for target in targets:
        started = time.perf_counter()
        start = encode(init, target) if isinstance(init, torch.nn.Module) else init
        encoded = time.perf_counter()
        pivots.append(
            project(G, GeneratorImages(target), space=space, steps=steps_pivot, seed=seed, preset=preset, init=start,
                    cancel=cancel)
        )  # fmt: skip
        starts.append(start)
        seconds.append({"encoder": encoded - started, "projection": time.perf_counter() - started})
    started = time.perf_counter()
    tuned = pivotal_tune_each(
        G, GeneratorImages(torch.cat(targets)), Latent.cat(pivots), steps=steps_tune, target_psnr=target_psnr,
        preset=preset, cancel=cancel,
    )  # fmt: skip
    share = (time.perf_counter() - started) / len(targets)
    results = [
        _measured(G, target, pivot, one, start, {**timing, "tuning": share}, space, preset, False, seed)
        for target, pivot, one, start, timing in zip(targets, pivots, tuned, starts, seconds)
    ]
    for result in results:
        result.metrics["tuned_together"] = len(results)
    return results


def encode(encoder: torch.nn.Module, images: torch.Tensor) -> Latent:
    """An encoder's ws for ``images`` (``[N, 3, R, R]`` in [-1, 1]) as a W+ ``Latent`` that records the encoder."""
    with torch.no_grad():
        ws = encoder(images).float()
    source = getattr(encoder, "meta", {}).get("source", type(encoder).__name__)
    return Latent(ws, space="w+", meta={"stage": "encoder", "source": f"encoder:{source}"})


def write_inversion(result: InversionResult, base: Generator, out_dir: str | Path) -> dict[str, Path]:
    """Write the result's files into ``out_dir`` (created if needed); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = make_comparison(
        [result.target, result.pivot_image, result.tuned_image],
        labels=["input", "pivot", "tuned"],
        height=max(128, result.target.shape[-1]),
    )
    paths = {
        "input": save_image(result.target, out / "input.png"),
        "pivot_image": save_image(result.pivot_image, out / "pivot.png"),
        "tuned_image": save_image(result.tuned_image, out / "tuned.png"),
        "comparison": save_image(comparison, out / "comparison.png"),
        "pivot": result.pivot.save(out / "pivot.safetensors"),
        "delta": save_delta(result.tuned, base, out / "tuned_delta.safetensors", provenance=result.metrics),
    }
    metrics = {**result.metrics, "files": {name: path.name for name, path in paths.items()}}
    metrics["delta_bytes"] = paths["delta"].stat().st_size
    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return paths

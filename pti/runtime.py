"""What both PTI stages (``projection``, ``tune``) share at run time: progress and cancel callbacks, presets with
overrides, and a generator that can take part in a backward pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from .errors import Cancelled
from .networks import Generator, clone_generator

# progress(step, total, losses, preview): preview is a [3, H, W] image in 0..1 or None.
ProgressFn = Callable[[int, int, dict[str, float], torch.Tensor | None], None]
# cancel() -> True stops the stage (raises Cancelled) before its next step.
CancelFn = Callable[[], bool]


def settings_from_preset(what: str, presets: dict[str, Any], preset: str, overrides: dict[str, Any]) -> Any:
    """Preset ``preset`` of ``presets`` with the non-``None`` ``overrides`` replaced; unknown names raise ValueError.

    ``what`` names the stage in messages ("projection", "tuning").
    """
    if preset not in presets:
        raise ValueError(f"unknown {what} preset {preset!r}; choose one of {sorted(presets)}")
    base = presets[preset]
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def device_of(G: torch.nn.Module) -> torch.device:
    """The device a module's parameters live on."""
    return next(G.parameters()).device


def autograd_ready(G: Generator) -> Generator:
    """``G`` itself, or a deep copy when its tensors were created under ``torch.inference_mode`` (as in ComfyUI),
    because inference tensors cannot take part in a backward pass. Call inside ``torch.inference_mode(False)``."""
    if any(t.is_inference() for t in (*G.parameters(), *G.buffers())):
        return clone_generator(G)
    return G


def check_cancel(cancel: CancelFn | None, what: str, step: int) -> None:
    """Raise ``Cancelled`` naming ``what`` and ``step`` when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled at step {step}")

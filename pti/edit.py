"""Latent editing arithmetic: move latents along a :class:`~pti.directions.Direction` (one strength or a sweep),
interpolate two latents, mix layers of one into another.

Every function takes ``ws`` ``[N, num_ws, w_dim]`` or a :class:`~pti.latent.Latent` and returns a new object of
the same kind (noise maps repeated to match the rows); the input is never modified. ``parse_strengths`` and
``parse_layer_range`` read the strength and layer strings of the CLI and the nodes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .directions import Direction, DirectionError


def _ws_of(target: Any) -> torch.Tensor:
    ws = target.ws if hasattr(target, "ws") and dataclasses.is_dataclass(target) else target
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3:
        shape = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise DirectionError(f"expected ws [N, num_ws, w_dim] or a Latent, got {shape}")
    return ws


def _with_ws(target: Any, ws: torch.Tensor, repeats: int = 1, space: str | None = None) -> Any:
    """A new object like ``target`` (tensor or Latent) with ``ws``; noise maps repeated to match the rows."""
    if isinstance(target, torch.Tensor):
        return ws
    noises = {k: v.repeat_interleave(repeats, dim=0).clone() for k, v in target.noises.items()}
    changes: dict[str, Any] = {"ws": ws, "noises": noises, "meta": json.loads(json.dumps(target.meta))}
    if space is not None:
        changes["space"] = space
    return dataclasses.replace(target, **changes)


def _edited_space(target: Any, layers: tuple[int, int] | None, num_ws: int, direction: Direction) -> str | None:
    if isinstance(target, torch.Tensor):
        return None
    whole = (layers or direction.layers or (0, num_ws)) == (0, num_ws) and direction.vector.ndim == 1
    return target.space if whole else "w+"


def apply_direction(target: Any, direction: Direction, strength: float, layers: tuple[int, int] | None = None) -> Any:
    """``w + strength * scale * d`` on the chosen layers; returns a new tensor/Latent (the input is untouched)."""
    ws = _ws_of(target)
    direction.check_compatible(ws.shape[2], ws.shape[1])
    offset = direction.offset(ws.shape[1], strength, layers).to(ws)
    return _with_ws(target, ws + offset, space=_edited_space(target, layers, ws.shape[1], direction))


def strength_sweep(
    target: Any, direction: Direction, strengths: Sequence[float], layers: tuple[int, int] | None = None
) -> Any:
    """One edited row per (input row, strength): row ``i * len(strengths) + j`` has ``strengths[j]``."""
    ws = _ws_of(target)
    if len(strengths) == 0:
        raise DirectionError("strength_sweep needs at least one strength")
    direction.check_compatible(ws.shape[2], ws.shape[1])
    offsets = torch.stack([direction.offset(ws.shape[1], s, layers) for s in strengths]).to(ws)
    edited = (ws.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1, *ws.shape[1:])
    return _with_ws(target, edited, len(strengths), _edited_space(target, layers, ws.shape[1], direction))


def parse_strengths(text: str) -> list[float]:
    """``"-3:3:7"`` (start:stop:count, inclusive) or ``"-2,0,2"`` -> list of strengths."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] < 1 or parts[2] != int(parts[2]):
                raise ValueError
            return np.linspace(parts[0], parts[1], int(parts[2])).round(6).tolist()
        return [float(p) for p in text.replace(";", ",").split(",") if p.strip()]
    except ValueError:
        raise DirectionError(f"strengths must be 'start:stop:count' or a comma list, got {text!r}") from None


def parse_layer_range(text: str) -> tuple[int, int]:
    """``"START:END"`` (end exclusive) -> ``(start, end)``."""
    parts = text.replace(",", ":").split(":")
    try:
        start, end = (int(p) for p in parts)
    except ValueError:
        raise DirectionError(f"layer range must be 'START:END' (end exclusive), got {text!r}") from None
    if not 0 <= start < end:
        raise DirectionError(f"layer range must have 0 <= START < END, got {text!r}")
    return start, end


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of directions along the last dim, with the norm interpolated linearly."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    unit = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    near = omega < 1e-4  # (almost) parallel: fall back to lerp
    unit = torch.where(near, (1 - t) * ua + t * ub, unit)
    return unit * ((1 - t) * na + t * nb)


def interpolate(a: Any, b: Any, t: float | Sequence[float], mode: str = "lerp") -> Any:
    """Interpolate two latents (tensors or Latents, same shape or ``b`` with one row) per ws layer.

    A sequence of ``t`` gives one row per (input row, t), like :func:`strength_sweep`. Noise maps follow ``a``.
    """
    if mode not in ("lerp", "slerp"):
        raise DirectionError(f"mode must be 'lerp' or 'slerp', got {mode!r}")
    wa, wb = _ws_of(a), _ws_of(b).to(_ws_of(a))
    if wb.shape[1:] != wa.shape[1:] or wb.shape[0] not in (1, wa.shape[0]):
        raise DirectionError(f"cannot interpolate ws shaped {list(wa.shape)} and {list(wb.shape)}")
    ts = [float(t)] if isinstance(t, (int, float)) else [float(v) for v in t]
    wb = wb.expand_as(wa)
    rows = [(wa + s * (wb - wa)) if mode == "lerp" else _slerp(wa, wb, s) for s in ts]
    edited = torch.stack(rows, dim=1).reshape(-1, *wa.shape[1:])
    return _with_ws(a, edited, len(ts), None if isinstance(a, torch.Tensor) else "w+")


def style_mix(target: Any, source: Any, layers: tuple[int, int]) -> Any:
    """Copy ws layers ``[start, end)`` from ``source`` (same rows, or one row) into a copy of ``target``."""
    wt, ws_src = _ws_of(target), _ws_of(source).to(_ws_of(target))
    if ws_src.shape[1:] != wt.shape[1:] or ws_src.shape[0] not in (1, wt.shape[0]):
        raise DirectionError(f"cannot mix ws shaped {list(wt.shape)} and {list(ws_src.shape)}")
    start, end = layers
    if not 0 <= start < end <= wt.shape[1]:
        raise DirectionError(f"layer range ({start}, {end}) is outside 0..{wt.shape[1]} (num_ws)")
    mixed = wt.clone()
    mixed[:, start:end] = ws_src[:, start:end].expand(wt.shape[0], -1, -1)
    return _with_ws(target, mixed, 1, None if isinstance(target, torch.Tensor) else "w+")

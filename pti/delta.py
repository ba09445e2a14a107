"""Compact tuned results: store a tuned generator as the difference to the base model it was tuned from.

A full tuned generator per photo is as large as the base model (≈127 MB at 1024 px in fp32); the tuning only moves
the weights a little, so the difference is stored instead:

- tensors that did not change are left out (the mapping network, noise buffers, ``w_avg`` — tuning never touches
  them);
- ``mode="lowrank"``: each changed weight matrix (convolutions reshaped to ``[out, in·k·k]``) is stored as rank-``rank``
  factors of its difference (truncated SVD, fp16 factors) when that is smaller than the dense difference; biases,
  constants, noise strengths and small tensors as dense fp16 differences. **Exact** for a generator tuned with
  ``pivotal_tune(..., rank=r)``, lossy otherwise: a full-rank tuning difference is not low-rank (on the default
  model, rank 4 reloads at ≈15 dB PSNR against the tuned output, rank 16 at ≈27 dB);
- ``mode="fp16"``: every changed tensor as a dense fp16 difference (≈ half the fp32 model, ≈90 dB);
- ``mode="auto"`` (default): ``lowrank`` at the tuning rank when the generator was tuned low-rank, else ``fp16``.

``benchmarks/bench_delta.py`` measures size against the reloaded output's PSNR for each mode (docs/design.md). The
file is a ``.safetensors`` whose metadata carries the base model's ``state_dict_hash``; ``load_delta`` refuses any
other base.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .checkpoints import CheckpointError, read_safetensors, save_generator, write_safetensors
from .hashing import remember_hash, state_dict_hash
from .lineage import mark_derived
from .networks import Generator, clone_generator

log = logging.getLogger(__name__)

DELTA_FORMAT = "pti-delta"
DELTA_MODES = ("auto", "lowrank", "fp16")
DEFAULT_RANK = 4
_DENSE, _FACTOR_U, _FACTOR_V = ".delta", ".delta_u", ".delta_v"


def _changed_tensors(tuned: Generator, base: Generator) -> dict[str, torch.Tensor]:
    """Name -> fp32 difference (CPU) for every floating-point tensor of the state dict that differs."""
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    if base_state.keys() != tuned_state.keys():
        raise ValueError("the tuned generator and the base have different layers; tune a copy of this base")
    changed = {}
    for name, base_tensor in base_state.items():
        tuned_tensor = tuned_state[name]
        if tuned_tensor.shape != base_tensor.shape:
            raise ValueError(
                f"tensor {name} is {list(tuned_tensor.shape)} in the tuned model, {list(base_tensor.shape)} in the base"
            )
        if not base_tensor.is_floating_point():
            continue
        diff = tuned_tensor.detach().to("cpu", torch.float32) - base_tensor.detach().to("cpu", torch.float32)
        if bool(diff.any()):
            changed[name] = diff
    return changed


def _low_rank(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rank-``rank`` factors ``(U·√S, √S·Vᵀ)`` of a weight difference seen as ``[out, rest]``, or None when storing
    the factors would not be smaller than the dense difference."""
    if diff.ndim < 2:
        return None
    matrix = diff.reshape(diff.shape[0], -1)
    rows, cols = matrix.shape
    if rank * (rows + cols) >= rows * cols:
        return None
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(torch.float16), (root[:, None] * vh[:rank]).to(torch.float16)


def save_delta(
    tuned: Generator,
    base: Generator,
    path: str | Path,
    mode: str = "auto",
    rank: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``tuned - base`` to ``path`` (``.safetensors``); see the module docstring for ``mode`` and ``rank``
    (default: the rank ``tuned`` was tuned with, else ``DEFAULT_RANK``)."""
    if mode not in DELTA_MODES:
        raise ValueError(f"mode must be one of {DELTA_MODES}, got {mode!r}")
    tuned_rank = int(getattr(tuned, "tuning_info", {}).get("settings", {}).get("rank", 0))
    if mode == "auto":
        mode = "lowrank" if tuned_rank else "fp16"
    rank = rank or tuned_rank or DEFAULT_RANK
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    tensors: dict[str, torch.Tensor] = {}
    for name, diff in _changed_tensors(tuned, base).items():
        factors = _low_rank(diff, rank) if mode == "lowrank" else None
        if factors is None:
            tensors[name + _DENSE] = diff.to(torch.float16)
        else:
            tensors[name + _FACTOR_U], tensors[name + _FACTOR_V] = factors
    metadata = {
        "format": DELTA_FORMAT,
        "format_version": "1",
        "mode": mode,
        "rank": str(rank),
        "base_hash": state_dict_hash(base),
        "config": json.dumps(base.init_kwargs, sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    written = write_safetensors(path, tensors, metadata)
    log.info("delta: %d tensors, %d bytes -> %s", len(tensors), written.stat().st_size, written)
    return written


def read_delta_metadata(path: str | Path) -> dict[str, Any]:
    """The delta's metadata (format, mode, rank, base_hash, config, provenance) without applying it."""
    _, metadata = _read_delta(Path(path))
    return metadata


def _read_delta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != DELTA_FORMAT:
        raise CheckpointError(f"{path} is not a PTI delta (format {metadata.get('format')!r}); use load_generator")
    try:
        parsed = {
            **metadata,
            "config": json.loads(metadata["config"]),
            "provenance": json.loads(metadata["provenance"]),
        }
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: malformed delta metadata ({exc})") from None
    return tensors, parsed


def load_delta(path: str | Path, base: Generator) -> Generator:
    """A NEW generator: ``base`` plus the delta stored at ``path``. ``base`` must be the exact model the delta was
    made from (checked by weight hash); otherwise a CheckpointError names both hashes."""
    path = Path(path)
    tensors, metadata = _read_delta(path)
    base_hash = state_dict_hash(base)
    if metadata.get("base_hash") != base_hash:
        raise CheckpointError(
            f"{path} was tuned from base model {metadata.get('base_hash')}, but the given generator is {base_hash}; "
            "load the delta onto the generator it was made from"
        )
    with torch.inference_mode(False), torch.no_grad():
        result = clone_generator(base).eval()
        state = result.state_dict()
        for name, diff in _decode(tensors, path).items():
            if name not in state:
                raise CheckpointError(
                    f"{path}: delta for unknown tensor {name!r}; it was made for another architecture"
                )
            target = state[name]
            if diff.numel() != target.numel():
                raise CheckpointError(
                    f"{path}: delta for {name} has {diff.numel()} values, the tensor {target.numel()}"
                )
            target.copy_((target.float() + diff.reshape(target.shape).to(target.device)).to(target.dtype))
    result.source_info = {"format": DELTA_FORMAT, "path": str(path), "hash": state_dict_hash(result), "base": base_hash}
    remember_hash(result, result.source_info["hash"])
    return mark_derived(result, base)


def _decode(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Stored entries -> name: fp32 difference (flattened to ``[out, rest]`` for factorised ones)."""
    diffs: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(_DENSE):
            diffs[key[: -len(_DENSE)]] = value.float()
        elif key.endswith(_FACTOR_U):
            name = key[: -len(_FACTOR_U)]
            other = tensors.get(name + _FACTOR_V)
            if other is None or value.ndim != 2 or other.ndim != 2 or value.shape[1] != other.shape[0]:
                raise CheckpointError(f"{path}: low-rank factors of {name} are missing or mismatched")
            diffs[name] = value.float() @ other.float()
        elif not key.endswith(_FACTOR_V):
            raise CheckpointError(f"{path}: unexpected tensor {key!r} in a delta file")
    return diffs


def export_full(tuned: Generator, path: str | Path, fp16: bool = False, provenance: dict | None = None) -> Path:
    """The whole tuned generator as this project's ``.safetensors`` (loadable with ``load_generator``)."""
    return save_generator(tuned, path, fp16=fp16, provenance=provenance)


def export_state_dict_pt(tuned: Generator, path: str | Path) -> Path:
    """A plain ``{name: tensor}`` state dict saved with ``torch.save``; the names are NVIDIA's, so
    ``Generator.load_state_dict`` of stylegan2-ada-pytorch accepts it (built with the same ``init_kwargs``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to("cpu").clone() for name, t in tuned.state_dict().items()}
    torch.save(state, path)
    return path

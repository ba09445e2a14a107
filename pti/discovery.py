"""Discovering edit directions without labels: GANSpace (PCA of sampled w) and SeFa (closed-form factorisation of
the style weights), and the cache that makes asking twice free.

Both depend only on the generator's weights and the parameters, so results are cached per ``state_dict_hash`` in
memory and as ``.safetensors`` direction files under :func:`cache_dir` (``PTI_CACHE_DIR`` or
``~/.cache/comfyui-pti``); :data:`CACHE_STATS` counts computations and hits. :func:`resolve_direction` reads the
direction strings of the CLI (``sefa:K``, ``ganspace:K``, a shipped name or a file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .directions import Direction, DirectionError, load_direction, load_directions, save_directions
from .hashing import state_dict_hash

log = logging.getLogger(__name__)

SEFA_LAYER_GROUPS = ("all", "coarse", "middle", "fine")
# Layer groups by block resolution, as in the StyleGAN/GANSpace/SeFa papers: coarse 4-8 px (pose, face shape),
# middle 16-32 px (features, expression), fine 64 px and up (colour, texture).
_GROUP_RESOLUTIONS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}
CACHE_STATS = {"computed": 0, "memory_hits": 0, "disk_hits": 0}


# ---------------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where computed directions are cached: ``$PTI_CACHE_DIR/directions`` or ``~/.cache/comfyui-pti/directions``."""
    root = os.environ.get("PTI_CACHE_DIR") or Path.home() / ".cache" / "comfyui-pti"
    return Path(root) / "directions"


_MEMORY_CACHE: dict[tuple[str, str, str], list[Direction]] = {}


def _cached(G: Any, method: str, params: dict[str, Any], compute: Callable[[], list[Direction]]) -> list[Direction]:
    model_hash = state_dict_hash(G)
    params_json = json.dumps(params, sort_keys=True)
    key = (model_hash, method, params_json)
    if key in _MEMORY_CACHE:
        CACHE_STATS["memory_hits"] += 1
        return [_copy(d) for d in _MEMORY_CACHE[key]]
    path = cache_dir() / f"{method}-{model_hash}-{hashlib.sha256(params_json.encode()).hexdigest()[:12]}.safetensors"
    directions = None
    if path.is_file():
        try:
            directions = list(load_directions(path).values())
            CACHE_STATS["disk_hits"] += 1
        except (DirectionError, OSError) as exc:
            log.warning("ignoring unreadable direction cache %s (%s); recomputing", path, exc)
    if directions is None:
        directions = compute()
        for direction in directions:
            direction.meta["generator_hash"] = model_hash
        CACHE_STATS["computed"] += 1
        try:
            save_directions(directions, path, model_hash)
        except OSError as exc:
            log.warning("could not write the direction cache %s (%s)", path, exc)
    _MEMORY_CACHE[key] = [_copy(d) for d in directions]
    return directions


def _copy(direction: Direction) -> Direction:
    return Direction(direction.name, direction.vector.clone(), direction.layers, json.loads(json.dumps(direction.meta)))


def clear_memory_cache() -> None:
    """Forget the in-memory cache (the disk cache stays)."""
    _MEMORY_CACHE.clear()


# ---------------------------------------------------------------------------------------------------- GANSpace / SeFa


def _canonical_sign(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (eigen/singular vectors have no sign)."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, idx))
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def _layer_ranges(layers: Any, count: int) -> list[tuple[int, int] | None]:
    if layers is None or (isinstance(layers, (tuple, list)) and len(layers) == 2 and isinstance(layers[0], int)):
        return [tuple(layers) if layers is not None else None] * count
    ranges = list(layers)
    if len(ranges) < count:
        raise DirectionError(f"got layer ranges for {len(ranges)} components, need {count}")
    return [tuple(r) if r is not None else None for r in ranges[:count]]


def sample_w(G: Any, num_samples: int, seed: int, batch_size: int = 1024) -> torch.Tensor:
    """``num_samples`` mapped w's ``[N, w_dim]`` (float64, CPU) from seeded z (and random one-hot classes)."""
    device = next(G.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    with torch.no_grad():
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            z = torch.randn(n, G.z_dim, generator=generator)
            c = None
            if G.c_dim:
                c = torch.nn.functional.one_hot(torch.randint(G.c_dim, (n,), generator=generator), G.c_dim).float()
                c = c.to(device)
            chunks.append(G.mapping(z.to(device), c)[:, 0].double().cpu())
    return torch.cat(chunks)


def ganspace(
    G: Any,
    num_components: int = 10,
    num_samples: int = 10_000,
    seed: int = 0,
    layers: Any = None,
    use_cache: bool = True,
) -> list[Direction]:
    """GANSpace: principal components of w over ``num_samples`` mapped samples, largest variance first.

    Components are unit vectors with ``meta["std"]`` their standard deviation (applied strength is in stds).
    ``layers``: None (all layers), one ``(start, end)`` for every component, or a list of per-component ranges.
    """
    if not 1 <= num_components <= G.w_dim:
        raise DirectionError(f"num_components must be in 1..{G.w_dim} (w_dim), got {num_components}")
    if num_samples <= num_components:
        raise DirectionError(f"num_samples ({num_samples}) must exceed num_components ({num_components})")
    ranges = _layer_ranges(layers, num_components)

    def compute() -> list[Direction]:
        w = sample_w(G, num_samples, seed)
        mean = w.mean(0)
        _, singular, vh = torch.linalg.svd(w - mean, full_matrices=False)
        std = singular / math.sqrt(num_samples - 1)
        total = float((std**2).sum())
        comps = _canonical_sign(vh[:num_components])
        return [
            Direction(
                f"ganspace_{i}",
                comps[i].float(),
                None,
                {
                    "method": "ganspace",
                    "index": i,
                    "std": float(std[i]),
                    "explained_variance": float(std[i] ** 2) / total,
                    "num_samples": num_samples,
                    "seed": seed,
                },
            )
            for i in range(num_components)
        ]

    params = {"num_components": num_components, "num_samples": num_samples, "seed": seed}
    directions = _cached(G, "ganspace", params, compute) if use_cache else compute()
    for direction, layer_range in zip(directions, ranges):
        direction.layers = layer_range
        if layer_range is not None:
            direction.check_compatible(G.w_dim, G.num_ws)
    return directions


def style_layers(G: Any) -> list[tuple[str, int, int, torch.nn.Module]]:
    """Every modulated conv layer (not toRGB) as ``(name, ws_index, resolution, layer)``, coarse to fine.

    StyleGAN3 has no resolution blocks: layer ``i`` (``L{i}_{size}_{channels}``, driven by ``ws[i + 1]``; ``ws[0]``
    drives the Fourier input's rotation and translation, which is not a style layer) is given the power of two
    nearest to twice its output cutoff frequency, the finest detail it carries. With the groups above, a 1024 px
    model's 14 style layers split 3 coarse, 3 middle, 8 fine (StyleGAN2 at 1024 px: 3, 4, 10 conv layers).
    """
    if hasattr(G.synthesis, "layer_names"):
        return [
            (name, index + 1, 2 ** round(math.log2(2 * layer.out_cutoff)), layer)
            for index, (name, layer) in enumerate(zip(G.synthesis.layer_names, G.synthesis.layers()))
            if not layer.is_torgb
        ]
    layers = []
    ws_index = 0
    for block in G.synthesis.blocks():
        for offset, name in enumerate(n for n in ("conv0", "conv1") if hasattr(block, n)):
            layers.append((f"b{block.resolution}.{name}", ws_index + offset, block.resolution, getattr(block, name)))
        ws_index += block.num_conv
    return layers


def _select_style_layers(G: Any, layers: str | Sequence[int]) -> list[tuple[str, int, int, torch.nn.Module]]:
    available = style_layers(G)
    if isinstance(layers, str):
        if layers not in SEFA_LAYER_GROUPS:
            raise DirectionError(f"layer group must be one of {SEFA_LAYER_GROUPS} or a list of ws indices")
        if layers == "all":
            return available
        low, high = _GROUP_RESOLUTIONS[layers]
        chosen = [entry for entry in available if low <= entry[2] <= high]
        if not chosen:
            raise DirectionError(f"the {G.img_resolution}px generator has no {layers!r} layers (resolutions {low}+)")
        return chosen
    indices = {int(i) for i in layers}
    chosen = [entry for entry in available if entry[1] in indices]
    if not chosen:
        raise DirectionError(f"no conv layer uses ws indices {sorted(indices)} (valid: 0..{G.num_ws - 1})")
    return chosen


def layer_group_range(G: Any, layers: str | Sequence[int]) -> tuple[int, int] | None:
    """The ws range ``(start, end)`` spanned by a layer group's conv layers (None for ``"all"``)."""
    if layers == "all":
        return None
    indices = sorted({entry[1] for entry in _select_style_layers(G, layers)})
    return (indices[0], indices[-1] + 1)


def sefa(
    G: Any, num_components: int = 10, layers: str | Sequence[int] = "all", use_cache: bool = True
) -> list[Direction]:
    """SeFa (closed-form factorisation): eigenvectors of AᵀA, A = the chosen layers' style-affine weights.

    Each affine weight ``[in_ch, w_dim]`` has its rows normalised to unit length; the directions are the top
    eigenvectors (largest eigenvalue first), each edit restricted to the ws layers of the chosen group.
    """
    if not 1 <= num_components <= G.w_dim:
        raise DirectionError(f"num_components must be in 1..{G.w_dim} (w_dim), got {num_components}")
    chosen = _select_style_layers(G, layers)
    group = layers if isinstance(layers, str) else "custom"
    indices = sorted({entry[1] for entry in chosen})
    layer_range = layer_group_range(G, layers)

    def compute() -> list[Direction]:
        weights = [entry[3].affine.weight.detach().double().cpu() for entry in chosen]
        stacked = torch.cat([w / w.norm(dim=1, keepdim=True).clamp_min(1e-12) for w in weights])
        eigenvalues, eigenvectors = torch.linalg.eigh(stacked.T @ stacked)
        order = eigenvalues.argsort(descending=True)[:num_components]
        vectors = _canonical_sign(eigenvectors[:, order].T)
        return [
            Direction(
                f"sefa_{group}_{i}",
                vectors[i].float(),
                layer_range,
                {"method": "sefa", "index": i, "eigenvalue": float(eigenvalues[order[i]]), "layer_group": group},
            )
            for i in range(num_components)
        ]

    params = {"num_components": num_components, "layers": layers if isinstance(layers, str) else indices}
    return _cached(G, "sefa", params, compute) if use_cache else compute()


def computed_direction(G: Any, spec: str) -> Direction:
    """``"sefa:K"``, ``"sefa:K:group"`` or ``"ganspace:K"`` -> component K computed for ``G`` (cached)."""
    parts = spec.split(":")
    method = parts[0].lower()
    if method not in ("sefa", "ganspace") or len(parts) < 2 or not parts[1].isdigit():
        raise DirectionError(f"expected 'sefa:K', 'sefa:K:GROUP' or 'ganspace:K', got {spec!r}")
    index = int(parts[1])
    if method == "sefa":
        group = parts[2] if len(parts) > 2 else "all"
        return sefa(G, index + 1, group)[index]
    return ganspace(G, index + 1)[index]


def resolve_direction(spec: str, G: Any) -> Direction:
    """A direction named by a CLI/node string: ``sefa:K``, ``ganspace:K``, a shipped name, or a file[#name]."""
    if spec.split(":")[0].lower() in ("sefa", "ganspace") and not Path(spec).is_file():
        return computed_direction(G, spec)
    return load_direction(spec, G)

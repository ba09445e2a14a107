"""Latent editing: direction files (InterFaceGAN, GANSpace, our own), GANSpace and SeFa, and applying them.

A :class:`Direction` is a vector in W (``[w_dim]``, the same step on every layer) or in W+ (``[num_ws, w_dim]``),
optionally restricted to a half-open range of ws layers ``(start, end)``. Applying one to a pivot is
``w + strength * scale * d`` on the chosen layers, where ``scale`` is 1 for unit boundaries (InterFaceGAN, SeFa) and
the component's standard deviation for GANSpace (so strength counts standard deviations).

Files are read without executing anything: ``.npy`` with ``allow_pickle=False``, ``.pt``/``.pth`` with the
restricted unpickler of :mod:`pti.safe_pickle`, ``.safetensors`` through its header-checked reader.

GANSpace and SeFa results depend only on the generator's weights and the parameters, so they are cached per
``state_dict_hash`` in memory and as ``.safetensors`` under :func:`cache_dir` (``PTI_CACHE_DIR`` or
``~/.cache/comfyui-pti``); :data:`CACHE_STATS` counts computations and hits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hashing import state_dict_hash

log = logging.getLogger(__name__)

DIRECTIONS_FORMAT = "pti-directions"
DEFAULT_DIRECTIONS_PATH = Path(__file__).resolve().parent / "default_model" / "directions.safetensors"
SEFA_LAYER_GROUPS = ("all", "coarse", "middle", "fine")
# Layer groups by block resolution, as in the StyleGAN/GANSpace/SeFa papers: coarse 4-8 px (pose, face shape),
# middle 16-32 px (features, expression), fine 64 px and up (colour, texture).
_GROUP_RESOLUTIONS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}
CACHE_STATS = {"computed": 0, "memory_hits": 0, "disk_hits": 0}


class DirectionError(ValueError):
    """A direction file or argument that cannot be used (wrong size, format, or name)."""


@dataclass
class Direction:
    """An edit direction in W (``vector [w_dim]``) or W+ (``vector [num_ws, w_dim]``).

    ``layers`` is a half-open ws-layer range ``(start, end)`` the edit is restricted to (None = every layer);
    ``meta`` is JSON-able provenance; ``meta["std"]`` (GANSpace) scales the strength.
    """

    name: str
    vector: torch.Tensor
    layers: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, torch.Tensor) or self.vector.ndim not in (1, 2):
            shape = list(self.vector.shape) if isinstance(self.vector, torch.Tensor) else type(self.vector).__name__
            raise DirectionError(f"direction {self.name!r}: vector must be [w_dim] or [num_ws, w_dim], got {shape}")
        vector = self.vector.detach().to("cpu", torch.float32)
        if not torch.isfinite(vector).all():
            raise DirectionError(f"direction {self.name!r} contains NaN or infinite values")
        self.vector = vector.clone()
        std = self.meta.get("std", 1.0) if isinstance(self.meta, dict) else None
        if isinstance(std, bool) or not isinstance(std, numbers.Real) or not math.isfinite(std):
            raise DirectionError(f"direction {self.name!r}: meta must be a dict whose 'std' (if any) is a number")
        if self.layers is not None:
            start, end = (int(v) for v in self.layers)
            if not 0 <= start < end:
                raise DirectionError(f"direction {self.name!r}: layers must be (start, end) with 0 <= start < end")
            self.layers = (start, end)

    @property
    def w_dim(self) -> int:
        return self.vector.shape[-1]

    @property
    def scale(self) -> float:
        """Multiplier of the strength: the component's std for GANSpace, else 1."""
        return float(self.meta.get("std", 1.0))

    def check_compatible(self, w_dim: int, num_ws: int | None = None) -> None:
        """Raise :class:`DirectionError` naming both sizes when this direction does not fit the latent space."""
        if self.w_dim != w_dim:
            raise DirectionError(
                f"direction {self.name!r} is {self.w_dim}-dimensional but the generator's w_dim is {w_dim}: "
                "it was made for a different model; use a direction computed for this generator (SeFa/GANSpace)"
            )
        if num_ws is not None and self.vector.ndim == 2 and self.vector.shape[0] != num_ws:
            raise DirectionError(
                f"direction {self.name!r} has {self.vector.shape[0]} layers but the generator has num_ws={num_ws}"
            )
        if num_ws is not None and self.layers is not None and self.layers[1] > num_ws:
            raise DirectionError(
                f"direction {self.name!r} edits layers {self.layers[0]}..{self.layers[1] - 1} but the generator "
                f"has only {num_ws} (num_ws)"
            )

    def offset(self, num_ws: int, strength: float, layers: tuple[int, int] | None = None) -> torch.Tensor:
        """The ``[num_ws, w_dim]`` step ``strength * scale * d`` on the chosen layers (``layers`` overrides)."""
        self.check_compatible(self.w_dim, num_ws)
        step = self.vector.expand(num_ws, -1) if self.vector.ndim == 1 else self.vector
        step = step * (float(strength) * self.scale)
        start, end = layers if layers is not None else (self.layers or (0, num_ws))
        if not 0 <= start < end <= num_ws:
            raise DirectionError(f"layer range ({start}, {end}) is outside 0..{num_ws} (num_ws)")
        mask = torch.zeros(num_ws, 1)
        mask[start:end] = 1.0
        return step * mask


# ---------------------------------------------------------------------------------------------------- files


def read_torch_file(path: str | Path) -> Any:
    """The object in a ``torch.save`` file, read by the restricted unpickler (no code runs), tensors loaded."""
    from .safe_pickle import PickleError, load_torch_file

    try:
        return load_torch_file(path)
    except PickleError as exc:
        raise DirectionError(f"{path}: cannot read this torch file safely ({exc})") from exc
    except RecursionError:
        raise DirectionError(
            f"{path}: the torch file nests containers implausibly deep; not a direction file"
        ) from None


def _float_array(value: Any, what: str) -> torch.Tensor:
    """A tensor/ndarray entry as a float32 tensor, or a DirectionError naming ``what``."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise DirectionError(f"{what} is a {type(value).__name__}, not a tensor")
    return torch.as_tensor(np.asarray(value, dtype=np.float32)) if isinstance(value, np.ndarray) else value.float()


def _entry_info(info: dict[str, Any], key: Any, stem: str) -> tuple[tuple[int, int] | None, dict[str, Any]]:
    """``(layers, meta)`` recorded for ``key`` in a directions file's metadata, checked for shape and type."""
    extra = info.get(key, {})
    layers, meta = extra.get("layers"), extra.get("meta", {})
    if layers and not (
        isinstance(layers, list) and len(layers) == 2 and all(type(v) is int for v in layers)  # noqa: E721
    ):
        raise DirectionError(f"{stem}: layers of {key!r} must be [start, end] ints, got {layers!r}")
    if not isinstance(meta, dict):
        raise DirectionError(f"{stem}: meta of {key!r} must be a JSON object, got {type(meta).__name__}")
    return (tuple(layers) if layers else None), dict(meta)


def read_npy(path: str | Path) -> np.ndarray:
    """A plain numeric ``.npy`` array; the header is checked against the file size before anything is allocated.

    ``np.load`` would allocate what the header claims (and needs ``allow_pickle=False`` to stay safe); here object
    arrays, structured dtypes and sizes that disagree with the file are a :class:`DirectionError`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
        except (ValueError, EOFError, SyntaxError, TypeError, tokenize.TokenError) as exc:
            raise DirectionError(f"{path}: not a plain numeric .npy array ({exc})") from None
        if dtype.hasobject or dtype.kind not in "fiub" or dtype.fields is not None:
            raise DirectionError(f"{path}: not a plain numeric .npy array (dtype {dtype}; pickled objects refused)")
        count = math.prod(shape)
        remaining = size - f.tell()
        if count * dtype.itemsize != remaining:
            raise DirectionError(
                f"{path}: .npy header declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) but the file "
                f"holds {remaining} bytes after it; the file is truncated or damaged"
            )
        flat = np.frombuffer(f.read(remaining), dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran_order else "C").astype(np.float32)


def _directions_from_tensors(
    tensors: dict[str, Any], stem: str, info: dict[str, Any] | None = None
) -> dict[str, Direction]:
    """Interpret loaded tensors: a GANSpace PCA dict (mean/comp/std), one tensor, or name -> tensor."""
    info = info or {}
    if {"comp", "std"} <= set(tensors):
        comp = _float_array(tensors["comp"], f"{stem}: GANSpace 'comp'")
        std = _float_array(tensors["std"], f"{stem}: GANSpace 'std'").reshape(-1)
        if comp.ndim < 2:
            raise DirectionError(f"{stem}: GANSpace 'comp' must be [components, ..., w_dim], got {list(comp.shape)}")
        comp = comp.reshape(comp.shape[0], -1)
        if comp.shape[0] != std.shape[0]:
            raise DirectionError(f"{stem}: GANSpace file has {comp.shape[0]} components but {std.shape[0]} stds")
        norms = comp.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return {
            f"pc{i}": Direction(
                f"pc{i}", comp[i] / norms[i], None, {"method": "ganspace", "index": i, "std": float(std[i])}
            )
            for i in range(comp.shape[0])
        }
    found = {}
    for key, value in tensors.items():
        vector = _float_array(value, f"{stem}: entry {key!r}")
        if vector.ndim == 2 and vector.shape[0] == 1:  # InterFaceGAN boundaries are [1, w_dim]
            vector = vector[0]
        name = stem if len(tensors) == 1 else key
        layers, meta = _entry_info(info, key, stem)
        found[name] = Direction(name, vector, layers, meta)
    if not found:
        raise DirectionError(f"{stem}: the file holds no tensors")
    return found


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from .checkpoints import CheckpointError, read_safetensors

    try:
        return read_safetensors(path)
    except CheckpointError as exc:
        raise DirectionError(f"{path} is not a readable .safetensors file ({exc})") from exc


def load_directions(path: str | Path, G: Any = None) -> dict[str, Direction]:
    """Every direction in a file (``.npy``, ``.pt``/``.pth``, ``.safetensors``), checked against ``G`` if given."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir() or path.exists():
            raise DirectionError(
                f"{path} is a {'directory' if path.is_dir() else 'special file'}; pass a direction file"
            )
        if path.is_symlink():
            raise DirectionError(f"{path} is a symbolic link to {os.readlink(path)}, which is missing or loops")
        raise FileNotFoundError(f"direction file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        directions = _directions_from_tensors({path.stem: read_npy(path)}, path.stem)
    elif suffix in (".pt", ".pth"):
        obj = read_torch_file(path)
        tensors = obj if isinstance(obj, dict) else {path.stem: obj}
        directions = _directions_from_tensors(tensors, path.stem)
    elif suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
        try:
            info = json.loads(metadata.get("directions", "{}"))
        except json.JSONDecodeError as exc:
            raise DirectionError(f"{path}: malformed 'directions' metadata ({exc})") from exc
        try:
            order = json.loads(metadata.get("order", "[]"))
        except json.JSONDecodeError as exc:
            raise DirectionError(f"{path}: malformed 'order' metadata ({exc})") from exc
        if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
            raise DirectionError(f"{path}: 'directions' metadata must map each name to a JSON object")
        if not isinstance(order, list) or not all(isinstance(name, str) for name in order):
            raise DirectionError(f"{path}: 'order' metadata must be a list of names")
        # safetensors stores tensors sorted by name; restore the order they were saved in.
        ranked = {name: tensors[name] for name in order if name in tensors}
        tensors = {**ranked, **{k: v for k, v in tensors.items() if k not in ranked}}
        directions = _directions_from_tensors(tensors, path.stem, info)
        if metadata.get("generator_hash"):
            for d in directions.values():
                d.meta.setdefault("generator_hash", metadata["generator_hash"])
    else:
        raise DirectionError(f"{path}: unsupported direction file type {suffix!r} (use .npy, .pt or .safetensors)")
    if G is not None:
        for d in directions.values():
            d.check_compatible(G.w_dim, G.num_ws)
    return directions


def save_directions(directions: Sequence[Direction], path: str | Path, generator_hash: str = "") -> Path:
    """Write directions to ``.safetensors`` (one tensor per name; layers and meta in the JSON metadata)."""
    from .checkpoints import write_safetensors

    names = [d.name for d in directions]
    if len(set(names)) != len(names):
        raise DirectionError(f"direction names must be unique, got {names}")
    tensors = {d.name: d.vector.contiguous() for d in directions}
    info = {d.name: {"layers": list(d.layers) if d.layers else None, "meta": d.meta} for d in directions}
    metadata = {
        "format": DIRECTIONS_FORMAT,
        "generator_hash": generator_hash,
        "directions": json.dumps(info),
        "order": json.dumps(names),
    }
    return write_safetensors(path, tensors, metadata)


def default_directions(path: str | Path | None = None) -> dict[str, Direction]:
    """The directions shipped with the default model (one unit vector per face attribute)."""
    path = Path(path) if path is not None else DEFAULT_DIRECTIONS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"the default model's directions are not shipped at {path}; reinstall the pack or pass a direction file"
        )
    return load_directions(path)


def load_direction(source: str | Path, G: Any = None, name: str | None = None) -> Direction:
    """One direction: a shipped name (``"smile"``), or a file, with ``name`` (or ``file#name``) for multi-files."""
    text = str(source)
    if name is None and "#" in text and not Path(text).is_file():
        text, name = text.rsplit("#", 1)
    path = Path(text)
    if path.is_file():
        directions = load_directions(path, G)
    elif path.suffix.lower() in (".npy", ".pt", ".pth", ".safetensors") or os.sep in text:
        directions = load_directions(path, G)  # raises the precise error: missing, a directory, a broken link
    else:
        shipped = default_directions()
        if text not in shipped:
            raise DirectionError(f"unknown direction {text!r}; shipped directions: {', '.join(sorted(shipped))}")
        directions, name = shipped, text
    if name is None:
        if len(directions) > 1:
            raise DirectionError(f"{path} holds {len(directions)} directions; pick one of: {', '.join(directions)}")
        name = next(iter(directions))
    if name not in directions:
        raise DirectionError(f"no direction {name!r} in {path}; it holds: {', '.join(directions)}")
    direction = directions[name]
    if G is not None:
        direction.check_compatible(G.w_dim, G.num_ws)
    return direction


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
    """Every modulated conv layer (not toRGB) as ``(name, ws_index, resolution, layer)``, coarse to fine."""
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


# ---------------------------------------------------------------------------------------------------- apply


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


# ---------------------------------------------------------------------------------------------------- previews


def render_sweep_grid(
    G: Any,
    ws: torch.Tensor,
    directions: Sequence[Direction],
    strengths: Sequence[float] = (-2.0, 0.0, 2.0),
    noise_mode: str = "const",
) -> torch.Tensor:
    """A grid ``[C, rows*H, cols*W]`` in [-1, 1]: one row per direction, one column per strength, from ``ws[0]``."""
    base = _ws_of(ws)[:1]
    device = next(G.parameters()).device
    rows = []
    with torch.no_grad():
        for direction in directions:
            batch = strength_sweep(base, direction, strengths).to(device)
            images = G.synthesis(batch, noise_mode=noise_mode).float().cpu()
            rows.append(torch.cat(list(images), dim=2))
    return torch.cat(rows, dim=1)

"""Edit directions and their files: what a :class:`Direction` is, reading and writing direction files, the
directions the pack ships: the embedded default model's own (128-d W) and FFHQ StyleGAN2's InterFaceGAN age, smile
and pose (512-d W, ``pti/ffhq``). A shipped name means the direction that fits the generator at hand.

A :class:`Direction` is a vector in W (``[w_dim]``, the same step on every layer) or in W+ (``[num_ws, w_dim]``),
optionally restricted to a half-open range of ws layers ``(start, end)``. Applying one to a pivot
(:mod:`pti.edit`) is ``w + strength * scale * d`` on the chosen layers, where ``scale`` is 1 for unit boundaries
(InterFaceGAN, SeFa) and the component's standard deviation for GANSpace (so strength counts standard deviations).

Files are read without executing anything: ``.npy`` with a header checked against the file (no pickled objects),
``.pt``/``.pth`` with the restricted unpickler of :mod:`pti.safe_pickle`, ``.safetensors`` through its
header-checked reader.
"""

from __future__ import annotations

import json
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

from .checkpoints import CheckpointError, read_safetensors, read_torch_file, write_safetensors
from .lineage import generator_lineage

DIRECTIONS_FORMAT = "pti-directions"
DEFAULT_DIRECTIONS_PATH = Path(__file__).resolve().parent / "default_model" / "directions.safetensors"
FFHQ_DIRECTIONS_PATH = Path(__file__).resolve().parent / "ffhq" / "directions.safetensors"
SHIPPED_DIRECTION_FILES = (DEFAULT_DIRECTIONS_PATH, FFHQ_DIRECTIONS_PATH)  # first file wins a name, without a G


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
                "it was made for a different model. Shipped names (smile, age, pose, ...) pick the direction that "
                "fits the generator when it is given (CLI: automatic; Load Direction: connect the generator); "
                "or use a direction computed for this generator (sefa:K / ganspace:K)"
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


def _read_file(read: Callable[[Path], Any], path: Path) -> Any:
    """``read(path)`` with a file the safe readers refuse reported as a :class:`DirectionError`."""
    try:
        return read(path)
    except CheckpointError as exc:
        raise DirectionError(f"{path} is not a readable direction file ({exc})") from exc


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
        obj = _read_file(read_torch_file, path)
        tensors = obj if isinstance(obj, dict) else {path.stem: obj}
        directions = _directions_from_tensors(tensors, path.stem)
    elif suffix == ".safetensors":
        tensors, metadata = _read_file(read_safetensors, path)
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


def shipped_directions(G: Any = None) -> dict[str, Direction]:
    """The shipped directions by name. With ``G``: only those that fit it (its ``w_dim``, and its lineage where a
    file records the model it was made for), so ``"smile"`` is FFHQ's smile on an FFHQ generator and the embedded
    model's on the embedded model. Without ``G``: every name once, the embedded model's first."""
    lineage = set(generator_lineage(G)) if G is not None else None
    found: dict[str, Direction] = {}
    for path in SHIPPED_DIRECTION_FILES:
        if not path.is_file():
            continue
        for name, direction in load_directions(path).items():
            made_for = direction.meta.get("generator_hash")
            if lineage is not None and (direction.w_dim != G.w_dim or (made_for and made_for not in lineage)):
                continue
            found.setdefault(name, direction)
    return found


def load_direction(source: str | Path, G: Any = None, name: str | None = None) -> Direction:
    """One direction: a shipped name (``"smile"``, chosen to fit ``G`` when given), or a file, with ``name`` (or
    ``file#name``) for multi-files."""
    text = str(source)
    if name is None and "#" in text and not Path(text).is_file():
        text, name = text.rsplit("#", 1)
    path = Path(text)
    if path.is_file():
        directions = load_directions(path, G)
    elif path.suffix.lower() in (".npy", ".pt", ".pth", ".safetensors") or os.sep in text:
        directions = load_directions(path, G)  # raises the precise error: missing, a directory, a broken link
    else:
        shipped = shipped_directions(G)
        if text not in shipped:
            fits = f" for this generator (w_dim {G.w_dim})" if G is not None else ""
            raise DirectionError(
                f"unknown direction {text!r}; shipped directions{fits}: {', '.join(sorted(shipped)) or 'none'}. "
                "Pass a direction file, or sefa:K / ganspace:K, which work for any generator"
            )
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

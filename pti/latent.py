"""The latent (pivot) container, rendering it, and the rule that ties a latent to the generators it may drive.

A :class:`Latent` holds projected (or sampled, or edited) latents ``ws`` with optional noise maps and provenance,
and is saved as a ``.safetensors`` file (format ``pti-latent``). It fits a generator when its shape does
(:meth:`Latent.check_compatible`) and, where it records which generator made it, when that generator and this one
are related by tuning (:func:`check_latent_fits`). That lineage lives in two places: a latent records the
hashes of the generator that made it and of that generator's ancestors (``generator_hash``,
``meta["generator_lineage"]``); a generator derived from another records its ancestors in the ``pti_lineage``
attribute (``pti.lineage.mark_derived``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .checkpoints import write_safetensors
from .hashing import generator_hash
from .lineage import generator_lineage
from .networks import Generator
from .runtime import device_of

SPACES = ("w", "w+")
LATENT_FORMAT = "pti-latent"
_NOISE_KEY = re.compile(r"^b(\d+)\.conv[01]$")


@dataclass
class Latent:
    """One or more projected latents: ``ws`` ``[N, num_ws, w_dim]`` plus optional per-row noise maps.

    ``noises`` maps ``'b{res}.conv{0,1}'`` to ``[N, 1, res, res]`` tensors (the projected noise, kept for
    provenance and for ``synthesize(..., use_noises=True)``); ``space`` is how the rows were found (``"w"``: one w
    broadcast to every layer, ``"w+"``: one w per layer); ``generator_hash`` is the ``state_dict_hash`` of the
    generator they belong to; ``meta`` is JSON-able provenance (steps, settings, final loss, ...).
    """

    ws: torch.Tensor
    noises: dict[str, torch.Tensor] = field(default_factory=dict)
    space: str = "w+"
    generator_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ws, torch.Tensor) or self.ws.ndim != 3 or not self.ws.is_floating_point():
            shape = list(self.ws.shape) if isinstance(self.ws, torch.Tensor) else type(self.ws).__name__
            raise ValueError(f"Latent.ws must be a float tensor [N, num_ws, w_dim], got {shape}")
        if self.space not in SPACES:
            raise ValueError(f"Latent.space must be one of {SPACES}, got {self.space!r}")
        for name, noise in self.noises.items():
            match = _NOISE_KEY.match(name)
            if match is None:
                raise ValueError(f"noise map name {name!r} is not of the form 'b<res>.conv0' / 'b<res>.conv1'")
            res = int(match.group(1))
            if tuple(noise.shape) != (len(self), 1, res, res):
                raise ValueError(f"noise map {name!r} must be [{len(self)}, 1, {res}, {res}], got {list(noise.shape)}")

    def __len__(self) -> int:
        return self.ws.shape[0]

    def _replace(self, ws: torch.Tensor, noises: dict[str, torch.Tensor]) -> Latent:
        return Latent(ws, noises, self.space, self.generator_hash, json.loads(json.dumps(self.meta)))

    def to(self, device: torch.device | str) -> Latent:
        """A copy on ``device``."""
        return self._replace(self.ws.to(device), {k: v.to(device) for k, v in self.noises.items()})

    def clone(self) -> Latent:
        """An independent copy (tensors cloned, meta deep-copied)."""
        return self._replace(self.ws.detach().clone(), {k: v.detach().clone() for k, v in self.noises.items()})

    def select(self, index: int) -> Latent:
        """Row ``index`` as a one-row Latent."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"latent index {index} out of range for {len(self)} rows")
        index = index % len(self)
        rows = slice(index, index + 1)
        return self._replace(self.ws[rows].clone(), {k: v[rows].clone() for k, v in self.noises.items()})

    @staticmethod
    def cat(latents: list[Latent]) -> Latent:
        """Stack rows of several latents (same generator, space, shapes and noise names)."""
        if not latents:
            raise ValueError("Latent.cat needs at least one latent")
        first = latents[0]
        for other in latents[1:]:
            if other.ws.shape[1:] != first.ws.shape[1:]:
                raise ValueError(f"cannot stack latents shaped {list(first.ws.shape)} and {list(other.ws.shape)}")
            if other.space != first.space or other.generator_hash != first.generator_hash:
                raise ValueError("cannot stack latents from different spaces or generators")
            if set(other.noises) != set(first.noises):
                raise ValueError("cannot stack latents with different noise maps")
        ws = torch.cat([lat.ws for lat in latents])
        noises = {k: torch.cat([lat.noises[k] for lat in latents]) for k in first.noises}
        meta = {"rows": [lat.meta for lat in latents]} if len(latents) > 1 else first.meta
        return Latent(ws, noises, first.space, first.generator_hash, json.loads(json.dumps(meta)))

    def check_compatible(self, G: Generator) -> None:
        """Raise ValueError when the latent cannot drive ``G`` (layer count, w size or noise names differ)."""
        if tuple(self.ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise ValueError(
                f"the latent is [N, {self.ws.shape[1]}, {self.ws.shape[2]}] (layers, values) but the generator needs "
                f"[N, {G.num_ws}, {G.w_dim}]: it was made with a different model; project the image with this "
                "generator (or sample a latent from it)"
            )
        unknown = set(self.noises) - set(G.synthesis.noise_layers())
        if unknown:
            raise ValueError(f"latent has noise maps the generator lacks: {sorted(unknown)}")

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file (tensors + JSON metadata; no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"ws": self.ws.detach().to("cpu", torch.float32).contiguous()}
        for name, noise in self.noises.items():
            tensors[f"noise.{name}"] = noise.detach().to("cpu", torch.float32).contiguous()
        metadata = {
            "format": LATENT_FORMAT,
            "version": "1",
            "space": self.space,
            "generator_hash": self.generator_hash,
            "meta": json.dumps(self.meta),
        }
        return write_safetensors(path, tensors, metadata)  # atomic: temporary file, then rename

    @classmethod
    def load(cls, path: str | Path) -> Latent:
        """Read a file written by ``save``; refuses anything else with a ValueError that says why."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt headers
            raise ValueError(f"{path} is not a readable .safetensors file ({exc})") from exc
        if metadata.get("format") != LATENT_FORMAT:
            raise ValueError(
                f"{path} is not a PTI latent (format {metadata.get('format')!r}, expected {LATENT_FORMAT!r})"
            )
        if "ws" not in tensors:
            raise ValueError(f"{path} has no 'ws' tensor")
        noises = {}
        for key, tensor in tensors.items():
            if key == "ws":
                continue
            if not key.startswith("noise."):
                raise ValueError(f"{path} holds an unexpected tensor {key!r}")
            noises[key[len("noise.") :]] = tensor
        try:
            meta = json.loads(metadata.get("meta", "{}"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} has malformed metadata ({exc})") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{path} has malformed metadata: 'meta' must be a JSON object, got {type(meta).__name__}")
        if not torch.isfinite(tensors["ws"]).all():
            raise ValueError(f"{path} holds NaN or infinite latent values")
        return cls(tensors["ws"], noises, metadata.get("space", ""), metadata.get("generator_hash", ""), meta)


def synthesize(G: Generator, latent: Latent, use_noises: bool = False, noise_mode: str = "const") -> torch.Tensor:
    """Render every row of ``latent`` with ``G`` -> ``[N, C, R, R]`` in ``[-1, 1]`` (no gradients).

    By default the generator's own constant noise buffers are used (``noise_mode='const'``), which is how pivotal
    tuning renders the pivot; ``use_noises=True`` uses the latent's projected noise maps instead.
    """
    latent.check_compatible(G)
    device = device_of(G)
    noises = {k: v.to(device) for k, v in latent.noises.items()} if use_noises else None
    with torch.no_grad():
        return G.synthesis(latent.ws.to(device), noise_mode=noise_mode, noises=noises)


# ----------------------------------------------------------------------------------------------------------------------
# Lineage: which generators a latent may drive


def latent_lineage(latent: Latent) -> set[str]:
    """Hashes of the generator that made ``latent`` and of the generators that one derives from (may be empty)."""
    return {latent.generator_hash, *latent.meta.get("generator_lineage", ())} - {"", None}


def latent_row_meta(latent: Latent, index: int) -> dict:
    """Provenance of one latent row: its entry in ``meta["rows"]`` (stacked latents) over the shared keys."""
    shared = {k: v for k, v in latent.meta.items() if k not in ("rows", "generator_lineage")}
    rows = latent.meta.get("rows")
    if isinstance(rows, list) and len(rows) == len(latent):
        return {**shared, **rows[index]}
    return shared


def check_latent_fits(latent: Latent, G: torch.nn.Module) -> None:
    """Refuse a latent that is empty, shaped for another model, or made with an unrelated generator.

    Related means the two lineages meet: ``G`` made the latent, one of them was tuned from the other, or both were
    tuned from the same base. A latent that records no generator is judged by its shape alone.
    """
    if len(latent) == 0:
        raise ValueError("the latent batch is empty")
    latent.check_compatible(G)
    known = latent_lineage(latent)
    if known and not known & set(generator_lineage(G)):
        raise ValueError(
            f"this latent was made with generator {latent.generator_hash}, but the generator is {generator_hash(G)} "
            "and not a tuned version of it: use the generator the latent came from (or its tuned version), or "
            "project or sample the latent again with this one"
        )


def check_tuned_from(tuned: torch.nn.Module, base: torch.nn.Module) -> None:
    """Refuse a ``base`` that ``tuned`` was not made from (a delta against it would be meaningless)."""
    if generator_hash(base) not in generator_lineage(tuned):
        raise ValueError(
            "the tuned generator was not tuned from the base generator: give the generator that went into pivotal "
            "tuning as the base"
        )

"""Stage 1 of PTI: project a photo into the generator's latent space (the *pivot*).

``project`` follows the StyleGAN2-ADA projector that PTI uses (see ``PTI_REFERENCE.md``): start from w_avg, optimise
w and the per-layer noise maps with Adam under a ramped learning rate and a decaying latent noise, LPIPS(VGG) loss
plus a noise-map regulariser, noise maps renormalised after every step. Two presets:

- ``"reference"``: the official defaults (450 steps, start at w_avg of 600 samples).
- ``"fast"`` (default): the same schedule compressed to 100 steps, starting from the best of 64 sampled w's
  (ranked by LPIPS to the target) instead of w_avg, with the AlexNet LPIPS (≈4-7x cheaper per step than VGG on
  CPU at 64 px; the pivot only has to be good enough for tuning to finish the job). Chosen by measurement
  (``benchmarks/bench_inversion.py``).

The generator is never modified: gradients are taken only with respect to the latent and the noise maps
(``torch.autograd.grad``), so no ``.grad`` is written to G and no ``requires_grad`` flag is touched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open

from .checkpoints import write_safetensors
from .errors import Cancelled, explain_out_of_memory
from .hashing import state_dict_hash
from .image import as_targets, to_unit
from .networks import Generator, clone_generator
from .perceptual import LpipsToTargets, load_lpips

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float], torch.Tensor | None], None]
CancelFn = Callable[[], bool]

SPACES = ("w", "w+")
LATENT_FORMAT = "pti-latent"
_NOISE_KEY = re.compile(r"^b(\d+)\.conv[01]$")


# ----------------------------------------------------------------------------------------------------------------------
# The latent (pivot) container


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
                f"latent is [N, {self.ws.shape[1]}, {self.ws.shape[2]}] but the generator needs "
                f"[N, {G.num_ws}, {G.w_dim}]; project the image with this generator"
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
    device = _device_of(G)
    noises = {k: v.to(device) for k, v in latent.noises.items()} if use_noises else None
    with torch.no_grad():
        return G.synthesis(latent.ws.to(device), noise_mode=noise_mode, noises=noises)


# ----------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class ProjectionSettings:
    """Hyper-parameters of ``project`` (names and defaults of the StyleGAN2-ADA projector where they exist)."""

    steps: int = 450  # Optimisation steps per image.
    lr: float = 0.01  # Peak learning rate.
    lr_rampup: float = 0.05  # Fraction of the steps spent ramping the lr up (linear).
    lr_rampdown: float = 0.25  # Fraction of the steps spent ramping the lr down (cosine).
    initial_noise_factor: float = 0.05  # Latent noise at t=0, in units of w_std.
    noise_ramp_length: float = 0.75  # Latent noise reaches zero at this fraction of the steps.
    noise_regularize_weight: float = 1e5  # Weight of the noise-map autocorrelation penalty.
    num_w_samples: int = 600  # Samples of mapping(z) for w_avg and w_std.
    init_candidates: int = 0  # Start from the best of this many sampled w's by LPIPS (0 = start at w_avg).
    optimize_noise: bool = True  # Optimise the noise maps (of layers with non-zero noise strength) along with w.
    lpips_net: str = "vgg"  # LPIPS backbone for the loss.
    lpips_resolution: int = 256  # Images larger than this are area-downsampled before LPIPS.
    preview_every: int = 25  # Send a preview image to ``progress`` every N steps (and at the last step).

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.num_w_samples < 2:
            raise ValueError(f"num_w_samples must be >= 2, got {self.num_w_samples}")
        if not 0 <= self.init_candidates <= self.num_w_samples:
            raise ValueError(f"init_candidates must be in 0..num_w_samples ({self.num_w_samples})")


PROJECTION_PRESETS: dict[str, ProjectionSettings] = {
    "reference": ProjectionSettings(),
    "fast": ProjectionSettings(steps=100, init_candidates=64, lpips_net="alex"),
}


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


def projection_settings(preset: str = "fast", **overrides: Any) -> ProjectionSettings:
    """The settings of a preset with some fields replaced; unknown names raise a ValueError listing valid ones."""
    return settings_from_preset("projection", PROJECTION_PRESETS, preset, overrides)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers shared with tuning


def _device_of(G: torch.nn.Module) -> torch.device:
    return next(G.parameters()).device


def autograd_ready(G: Generator) -> Generator:
    """``G`` itself, or a deep copy when its tensors were created under ``torch.inference_mode`` (as in ComfyUI),
    because inference tensors cannot take part in a backward pass. Call inside ``torch.inference_mode(False)``."""
    if any(t.is_inference() for t in (*G.parameters(), *G.buffers())):
        return clone_generator(G)
    return G


def check_cancel(cancel: CancelFn | None, what: str, step: int) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled at step {step}")


def _lpips_input(images: torch.Tensor, max_resolution: int) -> torch.Tensor:
    if images.shape[-1] > max_resolution:
        return F.interpolate(images, size=(max_resolution, max_resolution), mode="area")
    return images


def _learning_rate(t: float, settings: ProjectionSettings) -> float:
    rampdown = min(1.0, (1.0 - t) / settings.lr_rampdown)
    rampdown = 0.5 - 0.5 * math.cos(rampdown * math.pi)
    rampup = min(1.0, t / settings.lr_rampup)
    return settings.lr * rampdown * rampup


def _noise_regularizer(noises: list[torch.Tensor]) -> torch.Tensor:
    """Sum over scales of squared one-pixel autocorrelations of each noise map (penalises structure in noise)."""
    total = noises[0].new_zeros(())
    for noise in noises:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean() ** 2 + (noise * noise.roll(1, dims=2)).mean() ** 2
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Projection


def project(
    G: Generator,
    images: Any,
    space: str = "w",
    steps: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    preset: str = "fast",
    **options: Any,
) -> Latent:
    """Find latents whose renderings match ``images``; returns one ``Latent`` with a row per image.

    ``images``: photos in any form ``pti.image`` accepts (paths, PIL images, arrays or tensors in 0..1 or 8-bit,
    ComfyUI IMAGEs), or ``GeneratorImages`` for images already in ``[-1, 1]``. ``space="w"`` optimises one w
    broadcast to every layer (the reference; best for editing), ``"w+"`` one w per layer (closer fit, less
    editable). ``preset`` is ``"fast"`` or ``"reference"``; ``steps`` and ``options`` (fields of
    ``ProjectionSettings``) override it. Several images are projected one after the other (same settings, seeds
    ``seed``, ``seed+1``, ...); ``progress`` counts steps over all of them.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if G.c_dim:
        raise ValueError("projection of conditional generators (c_dim > 0) is not supported")
    settings = projection_settings(preset, steps=steps, **options)
    advice = "lower lpips_resolution or project fewer images at once"
    out_of_memory = explain_out_of_memory("projection", G.img_resolution, advice)
    with torch.inference_mode(False), torch.enable_grad(), out_of_memory:
        G_used = autograd_ready(G)
        device = _device_of(G_used)
        targets = as_targets(images, G.img_resolution, device)
        lpips_model = load_lpips(settings.lpips_net, device)
        w_samples, w_avg, w_std = _sample_w(G_used, settings.num_w_samples, seed, device)
        generator_hash = state_dict_hash(G)
        rows = []
        for index in range(targets.shape[0]):
            rows.append(
                _project_one(
                    G_used,
                    targets[index : index + 1],
                    space,
                    settings,
                    seed + index,
                    lpips_model,
                    (w_samples, w_avg, w_std),
                    _offset_progress(progress, index * settings.steps, targets.shape[0] * settings.steps),
                    cancel,
                )
            )
        latent = Latent.cat(rows)
        latent.generator_hash = generator_hash
        return latent


def _offset_progress(progress: ProgressFn | None, offset: int, total: int) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda step, _total, losses, preview: progress(offset + step, total, losses, preview)


def _sample_w(G: Generator, count: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``count`` mapped samples ``[count, w_dim]``, their mean ``[1, 1, w_dim]`` and RMS distance to the mean."""
    z = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / count).sqrt())
    return w, w_avg.unsqueeze(0), w_std


def _best_start(
    G: Generator, target: torch.Tensor, candidates: torch.Tensor, w_avg: torch.Tensor, lpips_model, settings
) -> tuple[torch.Tensor, float]:
    """The w (``[1, 1, w_dim]``) among w_avg and ``candidates`` whose rendering is closest to ``target`` (LPIPS)."""
    pool = torch.cat([w_avg[:, 0], candidates])
    best_w, best_distance = w_avg, math.inf
    to_target = LpipsToTargets(lpips_model, _lpips_input(target, settings.lpips_resolution))
    with torch.no_grad():
        for chunk in pool.split(16):
            images = G.synthesis(chunk.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")
            distances = to_target(_lpips_input(images, settings.lpips_resolution))
            distances = distances.flatten()
            index = int(distances.argmin())
            if float(distances[index]) < best_distance:
                best_distance, best_w = float(distances[index]), chunk[index].view(1, 1, -1).clone()
    return best_w, best_distance


def _project_one(
    G: Generator,
    target: torch.Tensor,
    space: str,
    settings: ProjectionSettings,
    seed: int,
    lpips_model,
    samples: tuple[torch.Tensor, torch.Tensor, float],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> Latent:
    device = target.device
    rng = torch.Generator().manual_seed(seed)
    w_samples, w_avg, w_std = samples
    start, start_distance = w_avg, None
    if settings.init_candidates:
        start, start_distance = _best_start(
            G, target, w_samples[: settings.init_candidates], w_avg, lpips_model, settings
        )

    w_opt = (start if space == "w" else start.expand(-1, G.num_ws, -1)).detach().clone().requires_grad_(True)
    # Noise maps of layers whose noise strength is zero cannot change the image: leave them out.
    noise_layers = {k: v for k, v in G.synthesis.noise_layers().items() if float(v.noise_strength.detach()) != 0}
    noises = {
        name: torch.randn([1, 1, layer.resolution, layer.resolution], generator=rng).to(device).requires_grad_(True)
        for name, layer in (noise_layers.items() if settings.optimize_noise else ())
    }
    params = [w_opt, *noises.values()]
    optimizer = torch.optim.Adam(params, lr=settings.lr, betas=(0.9, 0.999))
    to_target = LpipsToTargets(lpips_model, _lpips_input(target, settings.lpips_resolution))  # photo features once

    distance = reg = torch.zeros(())
    for step in range(settings.steps):
        check_cancel(cancel, "projection", step)
        t = step / settings.steps
        noise_scale = w_std * settings.initial_noise_factor * max(0.0, 1.0 - t / settings.noise_ramp_length) ** 2
        lr = _learning_rate(t, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr

        w_noise = torch.randn(w_opt.shape, generator=rng).to(device) * noise_scale
        ws = (w_opt + w_noise).expand(-1, G.num_ws, -1)
        synth = G.synthesis(ws, noise_mode="const", noises=noises)
        distance = to_target(_lpips_input(synth, settings.lpips_resolution)).sum()
        reg = _noise_regularizer(list(noises.values())) if noises else distance.new_zeros(())
        loss = distance + settings.noise_regularize_weight * reg

        optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(params, torch.autograd.grad(loss, params)):
            param.grad = grad
        optimizer.step()
        with torch.no_grad():
            for noise in noises.values():
                noise -= noise.mean()
                noise *= noise.square().mean().rsqrt()

        if progress is not None:
            last = step == settings.steps - 1
            preview = to_unit(synth[0]) if last or (step + 1) % settings.preview_every == 0 else None
            losses = {"lpips": float(distance.detach()), "noise_reg": float(reg.detach()), "lr": lr}
            progress(step + 1, settings.steps, losses, preview)

    meta = {
        "stage": "projection",
        "space": space,
        "seed": seed,
        "steps": settings.steps,
        "final_lpips": float(distance.detach()),
        "start_lpips": start_distance,
        "settings": dataclasses.asdict(settings),
    }
    ws = w_opt.detach().expand(-1, G.num_ws, -1).clone()
    return Latent(ws, {k: v.detach().clone() for k, v in noises.items()}, space, "", meta)

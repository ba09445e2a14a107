"""Stage 1 of PTI: project a photo into the generator's latent space (the *pivot*).

``project`` follows the StyleGAN2-ADA projector that PTI uses (see ``docs/design.md``): start from w_avg, optimise
w and the per-layer noise maps with Adam under a ramped learning rate and a decaying latent noise, LPIPS(VGG) loss
plus a noise-map regulariser, noise maps renormalised after every step. Two presets:

- ``"reference"``: the official defaults (450 steps, start at w_avg of 600 samples).
- ``"fast"`` (default): the same schedule compressed to 100 steps, starting from the best of 64 sampled w's
  (ranked by LPIPS to the target) instead of w_avg, with the AlexNet LPIPS (≈4-7x cheaper per step than VGG on
  CPU at 64 px; the pivot only has to be good enough for tuning to finish the job). Chosen by measurement
  (``benchmarks/bench_inversion.py``).

``init`` starts from a given latent instead (an encoder's output, a saved pivot, the previous video frame): the
candidate search is skipped and the optimisation refines from there; ``steps=0`` then returns the initial latent
as the pivot (PTI's ``use_e4e``: encoder only).

The generator is never modified: gradients are taken only with respect to the latent and the noise maps
(``torch.autograd.grad``), so no ``.grad`` is written to G and no ``requires_grad`` flag is touched.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import explain_out_of_memory
from .hashing import state_dict_hash
from .image import as_targets, to_unit
from .latent import SPACES, Latent
from .networks import Generator
from .perceptual import LpipsToTargets, load_lpips
from .runtime import CancelFn, ProgressFn, autograd_ready, check_cancel, device_of, settings_from_preset

log = logging.getLogger(__name__)


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
    init_steps: int = 0  # Steps when starting from an initial latent and ``steps`` is not given (0: keep it).

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0 (0 only with an initial latent), got {self.steps}")
        if self.num_w_samples < 2:
            raise ValueError(f"num_w_samples must be >= 2, got {self.num_w_samples}")
        if self.init_steps < 0:
            raise ValueError(f"init_steps must be >= 0, got {self.init_steps}")
        if not 0 <= self.init_candidates <= self.num_w_samples:
            raise ValueError(f"init_candidates must be in 0..num_w_samples ({self.num_w_samples})")


PROJECTION_PRESETS: dict[str, ProjectionSettings] = {
    "reference": ProjectionSettings(),  # from an encoder: its latent as it is (the official use_e4e)
    "fast": ProjectionSettings(steps=100, init_candidates=64, lpips_net="alex", init_steps=10),
}


def projection_settings(preset: str = "fast", **overrides: Any) -> ProjectionSettings:
    """The settings of a preset with some fields replaced; unknown names raise a ValueError listing valid ones."""
    return settings_from_preset("projection", PROJECTION_PRESETS, preset, overrides)


# ----------------------------------------------------------------------------------------------------------------------
# Schedules and losses


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
    init: Latent | torch.Tensor | None = None,
    **options: Any,
) -> Latent:
    """Find latents whose renderings match ``images``; returns one ``Latent`` with a row per image.

    ``images``: photos in any form ``pti.image`` accepts (paths, PIL images, arrays or tensors in 0..1 or 8-bit,
    ComfyUI IMAGEs), or ``GeneratorImages`` for images already in ``[-1, 1]``. ``space="w"`` optimises one w
    broadcast to every layer (the reference; best for editing), ``"w+"`` one w per layer (closer fit, less
    editable). ``preset`` is ``"fast"`` or ``"reference"``; ``steps`` and ``options`` (fields of
    ``ProjectionSettings``) override it. Several images are projected one after the other (same settings, seeds
    ``seed``, ``seed+1``, ...); ``progress`` counts steps over all of them.

    ``init``: a ``Latent`` or ws ``[N or 1, num_ws, w_dim]`` to start from (one row per image, or one row for all).
    In W the start is the mean of its layers; noise maps of a ``Latent`` with matching names are reused. With
    ``steps=0`` the initial latent itself is returned (one forward pass: no optimisation, no LPIPS needed); without
    ``steps`` the preset's ``init_steps`` apply.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if G.c_dim:
        raise ValueError("projection of conditional generators (c_dim > 0) is not supported")
    start = _initial_latent(init, G)
    if start is not None and steps is None:
        steps = projection_settings(preset, **options).init_steps
    settings = projection_settings(preset, steps=steps, **options)
    if settings.steps == 0 and start is None:
        raise ValueError("steps=0 needs an initial latent (init=...): there is nothing to refine")
    advice = "lower lpips_resolution or project fewer images at once"
    out_of_memory = explain_out_of_memory("projection", G.img_resolution, advice)
    with torch.inference_mode(False), torch.enable_grad(), out_of_memory:
        G_used = autograd_ready(G)
        device = device_of(G_used)
        targets = as_targets(images, G.img_resolution, device)
        if start is not None and len(start) not in (1, targets.shape[0]):
            raise ValueError(f"init has {len(start)} latents for {targets.shape[0]} images: give one per image, or one")
        if settings.steps == 0:
            return _unrefined(start.to(device), targets.shape[0], state_dict_hash(G))
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
                    None if start is None else start.select(index if len(start) > 1 else 0).to(device),
                )
            )
        latent = Latent.cat(rows)
        latent.generator_hash = generator_hash
        return latent


def _initial_latent(init: Latent | torch.Tensor | None, G: Generator) -> Latent | None:
    """``init`` as a ``Latent`` that fits ``G`` (a bare ws tensor becomes a W+ latent), or None."""
    if init is None:
        return None
    if isinstance(init, torch.Tensor):
        init = Latent(init.detach().float(), space="w+", meta={"stage": "init"})
    if not isinstance(init, Latent):
        raise TypeError(f"init must be a Latent or a ws tensor, got {type(init).__name__}")
    init.check_compatible(G)
    return init


def _unrefined(start: Latent, count: int, generator_hash: str) -> Latent:
    """The initial latent returned as the pivot (zero projection steps), one row per image."""
    rows = start if len(start) == count else Latent.cat([start] * count)
    ws = rows.ws.detach().clone()
    space = "w" if bool((ws == ws[:, :1]).all()) else "w+"
    meta = {"stage": "projection", "space": space, "steps": 0, "init": start.meta.get("source", "latent")}
    return Latent(ws, {k: v.detach().clone() for k, v in rows.noises.items()}, space, generator_hash, meta)


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
    init: Latent | None = None,
) -> Latent:
    device = target.device
    rng = torch.Generator().manual_seed(seed)
    w_samples, w_avg, w_std = samples
    start, start_distance = w_avg, None
    if init is not None:
        start = init.ws.mean(1, keepdim=True) if space == "w" else init.ws
    elif settings.init_candidates:
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
    if init is not None:  # e.g. the previous video frame's noise maps
        for name in noises.keys() & init.noises.keys():
            noises[name] = init.noises[name].detach().clone().to(device).requires_grad_(True)
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
        "init": None if init is None else init.meta.get("source", "latent"),
        "settings": dataclasses.asdict(settings),
    }
    ws = w_opt.detach().expand(-1, G.num_ws, -1).clone()
    return Latent(ws, {k: v.detach().clone() for k, v in noises.items()}, space, "", meta)

"""Stage 2 of PTI: pivotal tuning — fine-tune a copy of the generator so that G'(pivot) reproduces the photo.

The ``"reference"`` preset follows the official PTI coach (docs/design.md): Adam (lr 3e-4), loss = 1·LPIPS(AlexNet,
full resolution) + 1·MSE on the rendering of the fixed pivot with ``noise_mode='const'``, stop as soon as LPIPS ≤
0.06, optional locality regulariser (α 30, ψ 0.5, 0.1·MSE + 0.1·LPIPS on an interpolated latent, noise 'none').

The ``"fast"`` preset (the default) is built to reproduce the photo:

- **Stopping rule: PSNR against the photo** (``target_psnr``, 30 dB), which means the same thing at every
  resolution: the paper's LPIPS ≤ 0.06 was set for 1024 px models; at 64 px it is met while the picture is still a
  grey shape (measured on the example face: LPIPS 0.063 at 17 dB PSNR).
- Every synthesis weight is tuned (as the paper does) at lr 1e-3 for up to 600 steps, and the pixel MSE weighs 10
  against LPIPS. ``benchmarks/bench_tuning.py`` (docs/design.md): on the example face this reaches 28.1 dB / SSIM
  0.91, where the first fast preset (rank 4, LPIPS stop) stopped at 17.2 dB and the paper's lr 3e-4 reaches 21.2 dB
  after 600 steps.

Other decisions that differ from the reference, and why:

- Only the **synthesis** network is optimised. The mapping network cannot affect G'(pivot) (the pivot is a fixed
  w), so tuning it only wastes time and would make the stored delta larger; keeping it frozen also keeps every
  random z mapping to the same w as in the base model, so shipped edit directions and locality samples stay valid.
- Several images are tuned **together**: each step renders every pivot (in chunks of ``batch_size``) and minimises
  the mean loss; early stopping waits until **every** image is at or below the threshold. (The reference steps
  through the images one at a time.)
- ``rank=r`` tunes **rank-r updates** of every weight matrix instead (LoRA: W = W_base + U·V, biases and other
  small tensors directly): the result is exactly a rank-r difference, which ``save_delta`` stores losslessly in a
  small file (rank 4: ≈1/33 of the fp32 model), at some cost in fidelity (``bench_tuning.py``: rank 16 and rank 4
  reach 26.4 and 24.8 dB on the example face after 600 steps at lr 3e-3, LPIPS + MSE).
- Tuning renders with the generator's constant noise buffers (as the reference does), not with the noise maps the
  projection found: the tuned generator then reproduces the photo with plain ``noise_mode='const'``, which is how
  every later consumer (editing, ComfyUI nodes) renders.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import explain_out_of_memory
from .hashing import state_dict_hash
from .image import as_targets, to_unit
from .latent import Latent
from .lineage import mark_derived
from .networks import Generator, clone_generator
from .perceptual import LpipsToTargets, load_lpips
from .runtime import CancelFn, ProgressFn, autograd_ready, check_cancel, settings_from_preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningSettings:
    """Hyper-parameters of ``pivotal_tune`` (defaults = the official PTI hyper-parameters)."""

    steps: int = 350  # Maximum optimisation steps.
    lr: float = 3e-4  # Adam learning rate.
    lpips_threshold: float = 0.06  # Stop once LPIPS(alex) of every image is at or below this (0 = off).
    target_psnr: float = 0.0  # Stop once every image is at least this close to its photo, in dB PSNR (0 = off).
    lpips_weight: float = 1.0  # Weight of LPIPS(alex) in the reconstruction loss.
    mse_weight: float = 1.0  # Weight of the pixel MSE in the reconstruction loss.
    lpips_net: str = "alex"  # LPIPS backbone of the reconstruction loss.
    locality: bool = False  # Add the locality regulariser (keeps the rest of the latent space unchanged).
    locality_alpha: float = 30.0  # Distance from the pivot of the regularisation latent (over all layers).
    locality_psi: float = 0.5  # Truncation of the sampled latents the regularisation moves towards.
    locality_mse_weight: float = 0.1  # Weight of MSE(G(w_r), G'(w_r)).
    locality_lpips_weight: float = 0.1  # Weight of LPIPS(G(w_r), G'(w_r)).
    locality_every: int = 1  # Apply the regulariser every N steps.
    locality_samples: int = 1  # Sampled latents per regularisation step.
    edit_consistency: float = 0.0  # Weight of the edit-consistency term (0 = off): edits keep the photo's detail.
    edit_radius: float = 3.0  # Largest distance from the pivot (w units, every layer) of its sampled edits.
    edit_samples: int = 2  # Sampled edits per step.
    rank: int = 0  # 0: tune every weight (reference). r > 0: tune weight matrices as base + U·V of rank r (LoRA).
    batch_size: int = 4  # Images rendered per forward pass when tuning several at once.
    preview_every: int = 25  # Send a preview to ``progress`` every N steps (and at the last one).

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")
        if self.lpips_threshold < 0 or self.target_psnr < 0:
            raise ValueError("lpips_threshold and target_psnr must be >= 0 (0 turns the rule off)")
        if self.batch_size < 1 or self.locality_every < 1 or self.locality_samples < 1 or self.edit_samples < 1:
            raise ValueError("batch_size, locality_every, locality_samples and edit_samples must be >= 1")
        if self.edit_consistency < 0 or self.edit_radius <= 0:
            raise ValueError("edit_consistency must be >= 0 and edit_radius > 0")


TUNING_PRESETS: dict[str, TuningSettings] = {
    "reference": TuningSettings(),
    "fast": TuningSettings(steps=600, lr=1e-3, mse_weight=10.0, lpips_threshold=0.0, target_psnr=30.0),
}


def tuning_settings(preset: str = "fast", **overrides: Any) -> TuningSettings:
    """The settings of a preset with some fields replaced (``None`` keeps the preset's value)."""
    return settings_from_preset("tuning", TUNING_PRESETS, preset, overrides)


class _TunableSynthesis(torch.nn.Module):
    """The trainable view of a synthesis network: every parameter directly (``rank=0``), or each weight matrix as
    ``frozen + U·V`` with rank-``rank`` factors (LoRA; ``U`` starts at zero so tuning starts from the base) and the
    small tensors (biases, constants, noise strengths) directly. ``merge`` writes the result into the network."""

    def __init__(self, synthesis: torch.nn.Module, rank: int, rng: torch.Generator):
        super().__init__()
        self.synthesis = synthesis
        self.factored: dict[str, tuple[torch.Tensor, torch.nn.Parameter, torch.nn.Parameter]] = {}
        self.direct = torch.nn.ParameterList()
        self.factors = torch.nn.ParameterList()
        for name, param in synthesis.named_parameters():
            rows = param.shape[0] if param.ndim >= 2 else 0
            cols = param.numel() // rows if rows else 0
            if rank and rows and rank * (rows + cols) < rows * cols:
                u = torch.nn.Parameter(param.new_zeros(rows, rank))
                v = torch.nn.Parameter((torch.randn(rank, cols, generator=rng) / rank**0.5).to(param.device))
                self.factored[name] = (param.detach().clone(), u, v)
                self.factors.extend([u, v])
            else:
                param.requires_grad_(True)
                self.direct.append(param)

    def _overrides(self) -> dict[str, torch.Tensor]:
        return {name: frozen + (u @ v).view_as(frozen) for name, (frozen, u, v) in self.factored.items()}

    def forward(self, ws: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not self.factored:
            return self.synthesis(ws, **kwargs)
        return torch.func.functional_call(self.synthesis, self._overrides(), (ws,), kwargs, strict=False)

    def merge(self) -> None:
        with torch.no_grad():
            params = dict(self.synthesis.named_parameters())
            for name, value in self._overrides().items():
                params[name].copy_(value)


def pivotal_tune(
    G: Generator,
    images: Any,
    pivots: Latent,
    steps: int | None = None,
    lpips_threshold: float | None = None,
    target_psnr: float | None = None,
    locality: bool | None = None,
    lr: float | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    preset: str = "fast",
    **options: Any,
) -> Generator:
    """Return a NEW generator tuned so that it renders each pivot as the matching image; inputs are not modified.

    ``images``: the photos, in any form ``project`` accepts; ``pivots``: a ``Latent`` with N
    rows (or 1 row, used for every image). ``preset`` ``"fast"`` (default) or ``"reference"``; ``steps``,
    ``lpips_threshold``, ``target_psnr``, ``locality``, ``lr`` and ``options`` (fields of ``TuningSettings``)
    override it. Tuning stops at ``steps`` or once every image meets an enabled threshold.
    The result has ``tuning_info`` (dict: steps run, final per-image losses, base hash, settings).
    """
    settings = tuning_settings(
        preset,
        steps=steps,
        lpips_threshold=lpips_threshold,
        target_psnr=target_psnr,
        locality=locality,
        lr=lr,
        **options,
    )
    pivots.check_compatible(G)
    advice = "tune fewer images per run, or pass rank=4 (low-rank updates need far less optimiser memory)"
    out_of_memory = explain_out_of_memory("tuning", G.img_resolution, advice)
    with torch.inference_mode(False), torch.enable_grad(), out_of_memory:
        base = autograd_ready(G)
        device = next(base.parameters()).device
        targets = as_targets(images, G.img_resolution, device)
        pivot_ws = pivots.ws.detach().to(device, torch.float32).clone()
        if len(pivots) not in (1, targets.shape[0]):
            raise ValueError(f"got {targets.shape[0]} images but {len(pivots)} pivots; give one pivot per image")
        pivot_ws = pivot_ws.expand(targets.shape[0], -1, -1)

        tuned = clone_generator(base).eval().requires_grad_(False)
        synthesis = _TunableSynthesis(tuned.synthesis, settings.rank, rng=torch.Generator().manual_seed(seed))
        optimizer = torch.optim.Adam([*synthesis.direct, *synthesis.factors], lr=settings.lr, betas=(0.9, 0.999))
        lpips_model = load_lpips(settings.lpips_net, device)
        to_targets = LpipsToTargets(lpips_model, targets)  # the photos' features, once
        rng = torch.Generator().manual_seed(seed + 1)
        residuals = _residuals(base, pivot_ws, targets, settings)

        losses: dict[str, float] = {}
        per_image_lpips = torch.full((targets.shape[0],), float("inf"))
        step = 0
        for step in range(settings.steps + 1):
            check_cancel(cancel, "pivotal tuning", step)
            optimizer.zero_grad(set_to_none=True)
            per_image_lpips, per_image_mse, first_render = _reconstruction_step(
                synthesis, pivot_ws, targets, to_targets, settings
            )
            per_image_psnr = _psnr_from_mse(per_image_mse)
            losses = {
                "lpips": float(per_image_lpips.max()),
                "mse": float(per_image_mse.mean()),
                "psnr": float(per_image_psnr.min()),
            }
            if _close_enough(per_image_lpips, per_image_psnr, settings) or step == settings.steps:
                _report(progress, step, settings, losses, first_render, final=True)
                break
            if residuals is not None:
                losses["edit"] = _edit_consistency_step(base, synthesis, pivot_ws, residuals, settings, rng)
            if settings.locality and step % settings.locality_every == 0:
                losses["locality"] = _locality_step(base, synthesis, pivot_ws, lpips_model, settings, rng)
            optimizer.step()
            _report(progress, step + 1, settings, losses, first_render, final=False)

        synthesis.merge()
        tuned.requires_grad_(False)
        tuned.zero_grad(set_to_none=True)
        tuned.tuning_info = {
            "steps": step,
            "max_steps": settings.steps,
            "stopped_early": step < settings.steps,
            "final_lpips": [float(v) for v in per_image_lpips],
            "final_mse": [float(v) for v in per_image_mse],
            "final_psnr": [round(float(v), 3) for v in per_image_psnr],
            "base_hash": state_dict_hash(G),
            "settings": dataclasses.asdict(settings),
        }
        log.info("pivotal tuning: %d steps, LPIPS %s", step, ", ".join(f"{v:.4f}" for v in per_image_lpips))
        return mark_derived(tuned, G)  # latents and shipped directions of G stay usable with it


def _psnr_from_mse(mse_minus1_1: torch.Tensor) -> torch.Tensor:
    """PSNR in dB on the 0..1 scale (as ``pti.metrics.psnr``) from MSE measured on ``[-1, 1]`` images."""
    return -10 * torch.log10((mse_minus1_1 / 4).clamp_min(1e-12))


def _close_enough(per_image_lpips: torch.Tensor, per_image_psnr: torch.Tensor, settings: TuningSettings) -> bool:
    """The stopping rule: every image meets an enabled threshold (LPIPS at or below, or PSNR at or above)."""
    by_lpips = settings.lpips_threshold > 0 and bool((per_image_lpips <= settings.lpips_threshold).all())
    by_psnr = settings.target_psnr > 0 and bool((per_image_psnr >= settings.target_psnr).all())
    return by_lpips or by_psnr


def _report(
    progress: ProgressFn | None,
    step: int,
    settings: TuningSettings,
    losses: dict[str, float],
    render: torch.Tensor,
    final: bool,
) -> None:
    if progress is None:
        return
    preview = to_unit(render) if final or step % settings.preview_every == 0 else None
    progress(step, settings.steps, losses, preview)


def _reconstruction_step(
    tuned: _TunableSynthesis,
    pivot_ws: torch.Tensor,
    targets: torch.Tensor,
    to_targets: LpipsToTargets,
    settings: TuningSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accumulate gradients of the mean reconstruction loss over all images; return per-image LPIPS and MSE (CPU)
    and the first image's rendering (detached)."""
    count = targets.shape[0]
    lpips_values, mse_values, first_render = [], [], None
    for start in range(0, count, settings.batch_size):
        rows = slice(start, start + settings.batch_size)
        ws, target = pivot_ws[rows], targets[rows]
        synth = tuned(ws, noise_mode="const")
        lpips_value = to_targets(synth, rows).flatten()
        mse_value = (synth - target).square().flatten(1).mean(1)
        loss = (settings.lpips_weight * lpips_value + settings.mse_weight * mse_value).sum() / count
        loss.backward()
        lpips_values.append(lpips_value.detach().cpu())
        mse_values.append(mse_value.detach().cpu())
        first_render = synth[0].detach() if first_render is None else first_render
    return torch.cat(lpips_values), torch.cat(mse_values), first_render


def _locality_step(
    base: Generator,
    tuned: _TunableSynthesis,
    pivot_ws: torch.Tensor,
    lpips_model,
    settings: TuningSettings,
    rng: torch.Generator,
) -> float:
    """Accumulate gradients of the locality regulariser and return its value.

    Sample w = mapping(z, ψ), move from a pivot towards it by exactly α (norm over all layers) and penalise the
    difference between the base and tuned renderings there (noise 'none').
    """
    device = pivot_ws.device
    z = torch.randn(settings.locality_samples, base.z_dim, generator=rng).to(device)
    pivot_index = torch.randint(pivot_ws.shape[0], (settings.locality_samples,), generator=rng).to(device)
    with torch.no_grad():
        w = base.mapping(z, None, truncation_psi=settings.locality_psi)
        w_pivot = pivot_ws[pivot_index]
        direction = w - w_pivot
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
        w_reg = w_pivot + settings.locality_alpha * direction / norm
        before = base.synthesis(w_reg, noise_mode="none")
    after = tuned(w_reg, noise_mode="none")
    mse = F.mse_loss(after, before)
    lpips_value = lpips_model(after, before).mean()
    loss = settings.locality_mse_weight * mse + settings.locality_lpips_weight * lpips_value
    loss.backward()
    return float(loss.detach())


def _residuals(base: Generator, pivot_ws: torch.Tensor, targets: torch.Tensor, settings: TuningSettings):
    """What the base generator cannot draw at each pivot (photo − G(pivot)), for the edit-consistency term."""
    if not settings.edit_consistency:
        return None
    with torch.no_grad():
        renders = torch.cat([base.synthesis(ws, noise_mode="const") for ws in pivot_ws.split(settings.batch_size)])
    return targets - renders


def _edit_consistency_step(
    base: Generator,
    tuned: _TunableSynthesis,
    pivot_ws: torch.Tensor,
    residuals: torch.Tensor,
    settings: TuningSettings,
    rng: torch.Generator,
) -> float:
    """Accumulate gradients of the edit-consistency term and return its value.

    Near the pivot, an edit must change G' as it changes G and keep what G cannot draw: for a latent moved from a
    pivot along the difference of two mapped samples (every layer, a random distance up to ``edit_radius``),
    G'(w_e) is pulled towards G(w_e) + (photo − G(pivot)). Without it, the tuned generator draws the photo's detail
    only at the pivot itself and loses it under the smallest edit.
    """
    device = pivot_ws.device
    count = settings.edit_samples
    z = torch.randn(2 * count, base.z_dim, generator=rng).to(device)
    pivot_index = torch.randint(pivot_ws.shape[0], (count,), generator=rng).to(device)
    distance = (torch.rand(count, generator=rng) * settings.edit_radius).to(device).view(-1, 1, 1)
    with torch.no_grad():
        w = base.mapping(z, None)[:, :1]
        direction = w[:count] - w[count:]
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
        w_edit = pivot_ws[pivot_index] + distance * direction
        target = base.synthesis(w_edit, noise_mode="const") + residuals[pivot_index]
    after = tuned(w_edit, noise_mode="const")
    loss = settings.edit_consistency * F.mse_loss(after, target)
    loss.backward()
    return float(loss.detach())


def pivotal_tune_each(
    G: Generator,
    images: Any,
    pivots: Latent,
    steps: int | None = None,
    lpips_threshold: float | None = None,
    target_psnr: float | None = None,
    lr: float | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    preset: str = "fast",
    **options: Any,
) -> list[Generator]:
    """One NEW tuned generator per image, as ``[pivotal_tune(G, image_i, pivot_i) for each i]`` gives, in one
    forward/backward per step.

    The N copies of the synthesis weights are stacked and rendered together (``torch.func.functional_call`` under
    ``vmap``); image i's loss reaches only its own copy, and Adam is elementwise, so each copy follows its own run.
    Each image stops on its own rule (the preset's threshold, or ``steps``); a finished image leaves the batch with
    its weights and Adam moments, so it gets no further update and costs nothing more. Equal to the sequential runs
    up to float32 summation order (tests/test_tune_each.py states the tolerance). Full-weight tuning with the
    reconstruction loss only: ``rank``, ``locality`` and ``edit_consistency`` are refused (use ``pivotal_tune``).
    ``progress(step, total, losses, None)`` reports the worst active image.
    """
    settings = tuning_settings(
        preset, steps=steps, lpips_threshold=lpips_threshold, target_psnr=target_psnr, lr=lr, **options
    )
    if settings.rank or settings.locality or settings.edit_consistency:
        raise ValueError(
            "pivotal_tune_each tunes every weight with the reconstruction loss only; rank, locality and "
            "edit_consistency need pivotal_tune (one photo at a time)"
        )
    pivots.check_compatible(G)
    advice = "tune fewer images at once"
    with torch.inference_mode(False), torch.enable_grad(), explain_out_of_memory("tuning", G.img_resolution, advice):
        base = autograd_ready(G)
        device = next(base.parameters()).device
        targets = as_targets(images, G.img_resolution, device)
        count = targets.shape[0]
        if len(pivots) not in (1, count):
            raise ValueError(f"got {count} images but {len(pivots)} pivots; give one pivot per image")
        pivot_ws = pivots.ws.detach().to(device, torch.float32).expand(count, -1, -1)
        synthesis = base.synthesis
        buffers = {name: b.detach() for name, b in synthesis.named_buffers()}

        def render_one(params: dict[str, torch.Tensor], ws: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(synthesis, (params, buffers), (ws[None],), {"noise_mode": "const"})[0]

        render = torch.func.vmap(render_one)
        stacked = {n: p.detach().expand(count, *p.shape).clone() for n, p in synthesis.named_parameters()}
        optimizer = _BatchAdam(stacked, settings.lr)
        to_targets = LpipsToTargets(load_lpips(settings.lpips_net, device), targets)
        active = torch.arange(count)  # images still tuning, in the order of the stacked rows
        finished: list[dict[str, Any] | None] = [None] * count
        for step in range(settings.steps + 1):
            check_cancel(cancel, "pivotal tuning", step)
            params = optimizer.params()
            synth = render(params, pivot_ws[active.to(device)])
            lpips_value = to_targets(synth, active.to(device)).flatten()
            mse_value = (synth - targets[active.to(device)]).square().flatten(1).mean(1)
            lpips_cpu, mse_cpu = lpips_value.detach().cpu(), mse_value.detach().cpu()
            psnr_cpu = _psnr_from_mse(mse_cpu)
            stop = _meets_rule(lpips_cpu, psnr_cpu, settings) | (step == settings.steps)
            for row in stop.nonzero().flatten().tolist():
                finished[int(active[row])] = {
                    "weights": {n: p[row].detach().clone() for n, p in params.items()},
                    "steps": step,
                    "lpips": float(lpips_cpu[row]),
                    "mse": float(mse_cpu[row]),
                    "psnr": round(float(psnr_cpu[row]), 3),
                }
            losses = {"lpips": float(lpips_cpu.max()), "mse": float(mse_cpu.mean()), "psnr": float(psnr_cpu.min())}
            if bool(stop.all()):
                if progress is not None:
                    progress(step, settings.steps, losses, None)
                break
            (settings.lpips_weight * lpips_value + settings.mse_weight * mse_value).sum().backward()
            optimizer.step()
            if bool(stop.any()):
                optimizer.keep(~stop)
                active = active[~stop]
            if progress is not None:
                progress(step + 1, settings.steps, {**losses, "active": float(len(active))}, None)

        base_hash = state_dict_hash(G)
        results = []
        for outcome in finished:
            tuned = clone_generator(base).eval().requires_grad_(False)
            with torch.no_grad():
                for name, param in tuned.synthesis.named_parameters():
                    param.copy_(outcome["weights"][name])
            tuned.tuning_info = {
                "steps": outcome["steps"],
                "max_steps": settings.steps,
                "stopped_early": outcome["steps"] < settings.steps,
                "final_lpips": [outcome["lpips"]],
                "final_mse": [outcome["mse"]],
                "final_psnr": [outcome["psnr"]],
                "base_hash": base_hash,
                "settings": dataclasses.asdict(settings),
                "batched": count,
            }
            results.append(mark_derived(tuned, G))
        log.info("pivotal tuning of %d images at once: steps %s", count, [r.tuning_info["steps"] for r in results])
        return results


def _meets_rule(per_image_lpips: torch.Tensor, per_image_psnr: torch.Tensor, settings: TuningSettings) -> torch.Tensor:
    """Per image: does it meet an enabled threshold (``_close_enough`` asks this of every image at once)."""
    by_lpips = (per_image_lpips <= settings.lpips_threshold) & (settings.lpips_threshold > 0)
    by_psnr = (per_image_psnr >= settings.target_psnr) & (settings.target_psnr > 0)
    return by_lpips | by_psnr


class _BatchAdam:
    """``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8) over stacked per-image weights ``[N, ...]`` whose rows can
    be dropped (``keep``) with their moments, so a finished image's weights are never moved again."""

    def __init__(self, stacked: dict[str, torch.Tensor], lr: float) -> None:
        self.lr = lr
        self.tensors = {n: t.requires_grad_(True) for n, t in stacked.items()}
        self.optimizer = torch.optim.Adam(self.tensors.values(), lr=lr, betas=(0.9, 0.999))

    def params(self) -> dict[str, torch.Tensor]:
        return self.tensors

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a bool mask over the current rows) of every weight and of its Adam state."""
        old_state = self.optimizer.state
        kept = {}
        for name, tensor in self.tensors.items():
            kept[name] = tensor.detach()[rows.to(tensor.device)].clone().requires_grad_(True)
        optimizer = torch.optim.Adam(kept.values(), lr=self.lr, betas=(0.9, 0.999))
        for name, tensor in self.tensors.items():
            state = old_state.get(tensor)
            if state:
                mask = rows.to(tensor.device)
                optimizer.state[kept[name]] = {
                    "step": state["step"].clone(),
                    "exp_avg": state["exp_avg"][mask].clone(),
                    "exp_avg_sq": state["exp_avg_sq"][mask].clone(),
                }
        self.tensors, self.optimizer = kept, optimizer

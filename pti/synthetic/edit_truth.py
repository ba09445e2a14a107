"""Ground truth for editing: the renderer's own answer to "this face, with that attribute changed".

A face is a renderer latent ``z`` (its true latent in the default generator is ``G.mapping(z)``) painted with a
``Detail`` the generator cannot draw. Its "photo" is that render; the true edit is the same face and detail with one
renderer attribute moved. Metrics are taken inside the region the edit should change (where the true edit differs
from the photo) and outside it (the detail that must survive), in dB PSNR on the 0..1 scale.

``benchmarks/bench_edit_truth.py`` runs whole methods through it; ``tests/test_edit_truth.py`` asserts its
acceptance on one face.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..edit import Direction, apply_direction
from ..latent import Latent, synthesize
from . import faces
from .details import Detail

# The shipped directions the renderer can apply, each with the parameter it moves.
TRUTH_EDITS: tuple[str, ...] = ("glasses", "hair_length", "hair_color", "smile", "eye_openness", "yaw", "roll")
EDIT_AMOUNT = 0.35  # how far a continuous attribute moves (parameters are in 0..1)
REGION_THRESHOLD = 0.04  # a pixel belongs to the edit region when the true edit moves it by more (0..1 scale)
STRENGTHS = torch.linspace(-8.0, 8.0, 65)  # the search grid of direction strengths


@dataclass
class Face:
    """One held-out face: its renderer latent, parameters, detail and the photo (``[1, 3, R, R]`` in [-1, 1])."""

    z: torch.Tensor
    params: torch.Tensor
    detail: Detail | None
    photo: torch.Tensor


def held_out_faces(count: int, kind: str | None, seed: int, resolution: int = 64) -> list[Face]:
    """``count`` seeded faces carrying ``kind`` of detail (``None``: plain, in-domain renders)."""
    z = faces.sample_z(count, seed)
    params = faces.params_from_z(z)
    detail = Detail.sample(kind, count, seed + 1) if kind else None
    photos = quantize(faces.render(params, resolution, detail))
    return [
        Face(z[i : i + 1], params[i : i + 1], detail.rows(i, 1) if detail else None, photos[i : i + 1])
        for i in range(count)
    ]


def quantize(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` images as an 8-bit PNG of them reads back: what a user would hand the main job."""
    return ((images + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def edited_params(params: torch.Tensor, name: str, amount: float = EDIT_AMOUNT) -> torch.Tensor:
    """``params`` with attribute ``name`` moved towards its far side (glasses: put on or taken off)."""
    column = faces.ATTRIBUTE_NAMES.index(name)
    value = params[:, column]
    if name == "glasses":
        moved = torch.where(value < 0.5, torch.full_like(value, 0.9), torch.full_like(value, 0.1))
    else:
        moved = torch.where(value < 0.5, value + amount, value - amount)
    out = params.clone()
    out[:, column] = moved
    return out


def true_edit(face: Face, name: str, with_detail: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(before, after)``: the face as rendered and with attribute ``name`` changed, with or without its detail."""
    resolution = face.photo.shape[-1]
    detail = face.detail if with_detail else None
    before = faces.render(face.params, resolution, detail)
    after = faces.render(edited_params(face.params, name), resolution, detail)
    return before, after


def edit_region(before: torch.Tensor, after: torch.Tensor, threshold: float = REGION_THRESHOLD) -> torch.Tensor:
    """Boolean mask ``[N, 1, R, R]`` of the pixels the edit changes by more than ``threshold`` (0..1 scale)."""
    return ((after - before).abs().amax(dim=1, keepdim=True) / 2) > threshold


def region_psnr(prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, 0..1 scale) over the pixels where ``mask`` is set (``[-1, 1]`` images)."""
    weight = mask.expand_as(truth).float()
    squared = ((prediction.float() - truth.float()) / 2).square() * weight
    mse = squared.flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def fit_strength(
    G: torch.nn.Module, w: torch.Tensor, direction: torch.Tensor, target: torch.Tensor, strengths=STRENGTHS
) -> float:
    """The strength ``s`` whose ``G(w + s·d)`` is closest (MSE) to ``target``: how far the direction must move to
    match the renderer's edit on this face."""
    ws = w + strengths.view(-1, 1, 1).to(w) * direction.view(1, 1, -1).to(w)
    with torch.no_grad():
        images = torch.cat([G.synthesis(chunk, noise_mode="const") for chunk in ws.split(16)])
    errors = (images - target.to(images)).square().flatten(1).mean(1)
    return float(strengths[int(errors.argmin())])


def edit_scores(edited: torch.Tensor, before: torch.Tensor, after: torch.Tensor, plain_after: torch.Tensor) -> dict:
    """How close an edited image is to the true edit ``after`` of ``before`` (dB): ``gain_in``, the PSNR gained inside
    the edit region over leaving the face unedited; ``psnr_out`` outside it; ``psnr_detail`` on the detail's own
    pixels outside it (where ``after`` differs from ``plain_after``, the same edit without the detail: what must
    survive); ``psnr_all`` over the whole image."""
    mask = edit_region(before, after)
    detail_kept = edit_region(plain_after, after) & ~mask
    no_edit_in = region_psnr(before, after, mask)
    return {
        "gain_in": float(region_psnr(edited, after, mask) - no_edit_in),
        "psnr_out": float(region_psnr(edited, after, ~mask)),
        "psnr_detail": float(region_psnr(edited, after, detail_kept)),
        "psnr_all": float(region_psnr(edited, after, torch.ones_like(mask))),
    }


def score_direction(
    G: torch.nn.Module, face: Face, direction: Direction, inverted: dict[str, tuple[Latent, torch.nn.Module]]
) -> tuple[dict, list[torch.Tensor]]:
    """One direction on one face for every inverted method (name -> (pivot, generator)).

    The strength is fitted in-domain on the face's true latent (``G.mapping(z)``) against the renderer's edit without
    detail; returns the scores (``strength``, ``region_fraction``, ``in_domain_gain``, ``no_edit_in`` and each
    method's ``edit_scores``) and the pictures ``[photo, truth, each method's edit]``.
    """
    device = next(G.parameters()).device
    plain_before, plain_after = true_edit(face, direction.name, with_detail=False)
    before, after = true_edit(face, direction.name)
    with torch.no_grad():
        w_true = G.mapping(face.z.to(device), None)
        strength = fit_strength(G, w_true, direction.vector, plain_after.to(device))
        in_domain = G.synthesis(apply_direction(w_true, direction, strength), noise_mode="const").cpu()
    mask = edit_region(before, after)
    entry = {
        "strength": strength,
        "region_fraction": float(mask.float().mean()),
        "in_domain_gain": edit_scores(in_domain, plain_before, plain_after, plain_after)["gain_in"],
        "no_edit_in": float(region_psnr(before, after, mask)),
    }
    edited = {
        name: synthesize(model, apply_direction(latent, direction, strength)).cpu()
        for name, (latent, model) in inverted.items()
    }
    entry.update({name: edit_scores(image, before, after, plain_after) for name, image in edited.items()})
    return entry, [face.photo, after, *edited.values()]

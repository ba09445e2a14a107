"""Editing a face through a whole clip, coherent in time (STIT-style pivotal tuning on video).

The recipe, after Tzaban et al. 2022 ("Stitch it in Time"):

1. **Align** every frame (five landmarks per frame: detected, or given), then smooth the FFHQ crop squares over
   time: the centre with a Gaussian of ``sigma_center`` frames, the size/rotation vector with ``sigma_size`` frames,
   so the crop does not jitter with the detector's noise. Frames without a face are left out of every later stage
   and pass through unchanged.
2. **Pivots** per frame: an encoder's prediction (refined for a few steps when asked), or projection of each frame
   starting from the previous frame's pivot.
3. **One generator tuned on all frames** around their pivots (``pivotal_tune`` with every crop as a photo).
4. **The same edit** on every frame's pivot, decoded in slices.
5. Optional **stitching tuning** per frame: a working copy of the tuned generator (reset, not re-copied, for each
   frame) is tuned with its latent frozen so that the edited crop matches the original frame on a band around the
   paste mask and stays near the plain edit inside it: the seam disappears.
6. **Paste-back** through the inverse of each frame's crop transform with a feathered mask; pixels outside the mask
   are the original frame's, bit for bit.

:func:`invert_clip` runs steps 1-3 once for a clip; :func:`edit_clip` runs 4-6 on any run of its frames (by
``offset``), so a clip can be edited in chunks.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .align import (
    Alignment,
    NoFaceFoundError,
    crop_with_alignment,
    detect_faces,
    face_mask,
    ffhq_quad,
    paste_back,
    quad_alignment,
)
from .downloads import WeightStore
from .edit import apply_direction
from .image import GeneratorImages
from .latent import Latent, synthesize
from .networks import Generator, clone_generator
from .projection import project
from .runtime import CancelFn, ProgressFn, autograd_ready, check_cancel
from .tune import pivotal_tune

log = logging.getLogger(__name__)

StageProgress = Callable[[str, int], ProgressFn | None]
DECODE_SLICE = 8  # frames synthesised at once


class VideoError(ValueError):
    """A clip that cannot be processed: no frames, frames of different sizes, no face in any frame."""


@dataclass(frozen=True)
class VideoSettings:
    """How a clip is aligned, inverted, tuned and stitched (STIT's defaults where they apply)."""

    sigma_center: float = 1.0  # Gaussian smoothing of the crop centre over time, in frames (0 = off).
    sigma_size: float = 3.0  # Gaussian smoothing of the crop size and rotation over time, in frames (0 = off).
    pivot_steps: int | None = None  # Projection steps per frame (None: the preset's; from the encoder: its init).
    tune_steps: int = 300  # Tuning passes over all frames at most.
    target_psnr: float = 30.0  # Tuning stops once every frame is this close to its crop (dB; 0 = off).
    preset: str = "fast"  # Projection and tuning preset.
    stitch_steps: int = 0  # Stitching-tuning steps per frame (0 = off; STIT uses ~100).
    stitch_lr: float = 3e-4  # Learning rate of stitching tuning.
    feather: float = 0.08  # Fall-off of the paste mask (fraction of the crop).
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sigma_center < 0 or self.sigma_size < 0:
            raise ValueError("sigma_center and sigma_size must be >= 0 (0 turns smoothing off)")
        if self.tune_steps < 0 or self.stitch_steps < 0 or (self.pivot_steps is not None and self.pivot_steps < 0):
            raise ValueError("pivot_steps, tune_steps and stitch_steps must be >= 0")


@dataclass
class ClipInversion:
    """What the tuning stage hands to the editing stage: the tuned generator, one pivot per face frame, and each
    frame's (smoothed) alignment, ``None`` where no face was found."""

    tuned: Generator
    pivots: Latent
    alignments: list[Alignment | None]
    raw_alignments: list[Alignment | None]
    crops: torch.Tensor  # the aligned faces tuned on, [F, 3, R, R] in 0..1 (frames with a face)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def face_frames(self) -> list[int]:
        return [i for i, a in enumerate(self.alignments) if a is not None]

    def pivot_of(self, frame: int) -> int:
        """Row of ``pivots`` that belongs to ``frame`` (a frame with a face)."""
        return self.face_frames.index(frame)


# ------------------------------------------------------------------------------------------------------ alignment


def check_frames(frames: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` float frames in 0..1 (one clear error for an empty batch or a wrong shape)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = list(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise VideoError(f"frames must be a [N, 3, H, W] tensor, got {shape}")
    if frames.shape[0] == 0:
        raise VideoError("the clip has no frames")
    return frames.float()


def detect_clip_landmarks(
    frames: torch.Tensor, detector: str = "auto", store: WeightStore | None = None
) -> list[np.ndarray | None]:
    """Five landmarks per frame (the face nearest the previous frame's, else the largest), ``None`` without one."""
    found: list[np.ndarray | None] = []
    previous: np.ndarray | None = None
    for frame in frames:
        try:
            faces, _method = detect_faces(frame, detector, store)
        except NoFaceFoundError:
            faces = []
        if not faces:
            found.append(None)
            continue
        points = [np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2) for face in faces]
        if previous is not None:
            points.sort(key=lambda p: float(np.linalg.norm(p.mean(0) - previous.mean(0))))
        found.append(points[0])
        previous = points[0]
    return found


def _gaussian_over_time(values: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Each row replaced by a Gaussian-weighted local linear fit of the rows around it, evaluated at its own time
    (weights by distance in frames; gaps between the given ``times`` are simply farther away). Inside the clip this
    is the plain Gaussian mean; at its ends and along steady motion it does not lag behind, as a plain mean does."""
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    offsets = times[None, :] - times[:, None]  # [i, j]: time of row j relative to row i
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    s0, s1, s2 = weights.sum(1), (weights * offsets).sum(1), (weights * offsets**2).sum(1)
    denominator = s0 * s2 - s1**2
    linear = denominator > 1e-9 * s0**2  # a lone row (or rows too far apart) gets the plain mean
    # Intercept of the weighted least-squares line: sum_j c_ij y_j with c_ij = w_ij (s2_i - s1_i d_ij) / denominator.
    safe = np.where(linear, denominator, 1.0)
    coefficients = np.where(
        linear[:, None], weights * (s2[:, None] - s1[:, None] * offsets) / safe[:, None], weights / s0[:, None]
    )
    return coefficients @ values


def smooth_alignments(
    landmarks: Sequence[np.ndarray | None],
    source_size: tuple[int, int],
    crop_size: int,
    sigma_center: float = 1.0,
    sigma_size: float = 3.0,
) -> tuple[list[Alignment | None], list[Alignment | None]]:
    """``(smoothed, raw)`` alignments of a clip from per-frame landmarks (``None``: no face in that frame)."""
    present = [i for i, points in enumerate(landmarks) if points is not None]
    raw: list[Alignment | None] = [None] * len(landmarks)
    smoothed: list[Alignment | None] = [None] * len(landmarks)
    if not present:
        return smoothed, raw
    quads = [ffhq_quad(landmarks[i]) for i in present]
    centres, xs = np.array([q[0] for q in quads]), np.array([q[1] for q in quads])
    times = np.array(present, dtype=np.float64)
    smooth_centres = _gaussian_over_time(centres, times, sigma_center)
    smooth_xs = _gaussian_over_time(xs, times, sigma_size)
    for k, i in enumerate(present):
        raw[i] = quad_alignment(centres[k], xs[k], source_size, crop_size, landmarks[i], "clip")
        smoothed[i] = quad_alignment(smooth_centres[k], smooth_xs[k], source_size, crop_size, landmarks[i], "clip")
    return smoothed, raw


# ------------------------------------------------------------------------------------------------------ inversion


def _stage(stage_progress: StageProgress | None, name: str, total: int) -> ProgressFn | None:
    return stage_progress(name, total) if stage_progress is not None else None


def _pivots(
    G: Generator,
    crops: torch.Tensor,
    settings: VideoSettings,
    encoder: torch.nn.Module | None,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> Latent:
    """One pivot per crop: the encoder's (refined), or each frame projected from the previous frame's pivot."""
    targets = GeneratorImages(crops * 2 - 1)
    if encoder is not None:
        with torch.no_grad():
            device = next(itertools.chain(encoder.parameters(), encoder.buffers()), crops).device
            start = Latent(encoder(crops.to(device) * 2 - 1).float(), space="w+")
        return project(
            G, targets, space="w", steps=settings.pivot_steps, seed=settings.seed, preset=settings.preset,
            init=start, progress=progress, cancel=cancel,
        )  # fmt: skip
    rows: list[Latent] = []
    for index in range(len(crops)):
        check_cancel(cancel, "pivots", index)
        previous = rows[-1] if rows else None
        steps = settings.pivot_steps if previous is None or settings.pivot_steps is not None else None
        rows.append(
            project(
                G,
                GeneratorImages(crops[index : index + 1] * 2 - 1),
                space="w",
                steps=steps,
                seed=settings.seed + index,
                preset=settings.preset,
                init=previous,
            )  # fmt: skip
        )
        if progress is not None:
            progress(index + 1, len(crops), {}, None)
    latent = Latent.cat(rows)
    latent.generator_hash = rows[0].generator_hash
    return latent


def invert_clip(
    G: Generator,
    frames: torch.Tensor,
    landmarks: Sequence[np.ndarray | None] | None = None,
    settings: VideoSettings | None = None,
    encoder: torch.nn.Module | None = None,
    detector: str = "auto",
    store: WeightStore | None = None,
    stage_progress: StageProgress | None = None,
    cancel: CancelFn | None = None,
) -> ClipInversion:
    """Align, find pivots and tune one generator on a whole clip (``frames`` ``[N, 3, H, W]`` in 0..1).

    ``landmarks``: five points per frame (``None`` for a frame without a face); detected with ``detector`` when
    not given. A clip of one frame is a photo. Raises :class:`VideoError` when no frame has a face.
    """
    settings = settings or VideoSettings()
    frames = check_frames(frames)
    height, width = frames.shape[-2:]
    started = time.perf_counter()
    if landmarks is None:
        landmarks = detect_clip_landmarks(frames, detector, store)
    if len(landmarks) != len(frames):
        raise VideoError(f"{len(landmarks)} landmark sets for {len(frames)} frames: give one per frame (None: no face)")
    resolution = G.img_resolution
    alignments, raw = smooth_alignments(
        landmarks, (width, height), resolution, settings.sigma_center, settings.sigma_size
    )
    face_frames = [i for i, a in enumerate(alignments) if a is not None]
    if not face_frames:
        raise VideoError("no face was found in any frame of the clip; check the clip, or give landmarks")
    crops = torch.stack([crop_with_alignment(frames[i], alignments[i]) for i in face_frames])
    aligned = time.perf_counter()
    pivots = _pivots(G, crops, settings, encoder, _stage(stage_progress, "pivots", len(crops)), cancel)
    projected = time.perf_counter()
    tuned = pivotal_tune(
        G, GeneratorImages(crops * 2 - 1), pivots, steps=settings.tune_steps, target_psnr=settings.target_psnr,
        seed=settings.seed, preset=settings.preset, progress=_stage(stage_progress, "tuning", settings.tune_steps),
        cancel=cancel,
    )  # fmt: skip
    finished = time.perf_counter()
    report = {
        "frames": len(frames),
        "frames_with_face": len(face_frames),
        "frames_without_face": [i for i in range(len(frames)) if alignments[i] is None],
        "tuning_steps": tuned.tuning_info["steps"],
        "tuned_psnr_min": min(tuned.tuning_info["final_psnr"]),
        "seconds": {
            "align": round(aligned - started, 3),
            "pivots": round(projected - aligned, 3),
            "tuning": round(finished - projected, 3),
        },
    }
    log.info(
        "clip inverted: %d of %d frames with a face, %d tuning steps",
        len(face_frames),
        len(frames),
        tuned.tuning_info["steps"],
    )
    return ClipInversion(tuned, pivots, alignments, raw, crops, report)


# -------------------------------------------------------------------------------------------------------- editing


def stitch_band(size: int, feather: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop-space weights of stitching tuning: ``(band, inside)``. ``band`` covers the paste mask's edge and a
    margin around it (where the original must be matched); ``inside`` the face within it (where the plain edit is
    kept)."""
    mask = face_mask(size, feather)
    outer = face_mask(size, feather, radii=(0.33 * 1.25, 0.41 * 1.25))
    inner = face_mask(size, feather, radii=(0.33 * 0.8, 0.41 * 0.8))
    return (outer - inner).clamp(0, 1).maximum((mask - inner).clamp(0, 1)), inner


def _stitch(
    working: Generator,
    tuned_state: dict[str, torch.Tensor],
    ws: torch.Tensor,
    original: torch.Tensor,
    naive: torch.Tensor,
    band: torch.Tensor,
    inside: torch.Tensor,
    settings: VideoSettings,
) -> torch.Tensor:
    """One frame's stitching tuning on ``working`` (reset to ``tuned_state`` first); returns the edited crop
    ``[1, 3, R, R]`` in [-1, 1]."""
    with torch.no_grad():
        working.load_state_dict(tuned_state)
    params = list(working.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=settings.stitch_lr)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(settings.stitch_steps):
            optimizer.zero_grad(set_to_none=True)
            out = working.synthesis(ws, noise_mode="const")
            loss = F.mse_loss(out * band, original * band) + F.mse_loss(out * inside, naive * inside)
            loss.backward()
            optimizer.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        return working.synthesis(ws, noise_mode="const")


def edit_clip(
    inversion: ClipInversion,
    frames: torch.Tensor,
    edit: Callable[[Latent], Latent] | None = None,
    offset: int = 0,
    settings: VideoSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Edit frames ``offset .. offset + len(frames)`` of the inverted clip and paste them back.

    ``edit`` maps the pivots (a ``Latent``) to edited ones (``None``: reconstruct). Returns ``(frames [N, 3, H, W]
    in 0..1, masks [N, H, W], report)``; frames without a face come back unchanged with an empty mask.
    """
    settings = settings or VideoSettings()
    frames = check_frames(frames)
    if offset < 0 or offset + len(frames) > len(inversion.alignments):
        raise VideoError(
            f"frames {offset}..{offset + len(frames) - 1} are outside the inverted clip of "
            f"{len(inversion.alignments)} frames: pass the offset of this chunk"
        )
    first = next((a for a in inversion.alignments if a is not None), None)
    if first is not None and tuple(frames.shape[-1:-3:-1]) != tuple(first.source_size):
        raise VideoError(
            f"frames are {frames.shape[-1]}x{frames.shape[-2]} but the clip was inverted at "
            f"{first.source_size[0]}x{first.source_size[1]}"
        )
    tuned = inversion.tuned
    device = next(tuned.parameters()).device
    resolution = tuned.img_resolution
    band, inside = (t.to(device) for t in stitch_band(resolution, settings.feather))
    working = clone_generator(autograd_ready(tuned)) if settings.stitch_steps else None
    tuned_state = {k: v.detach().clone() for k, v in tuned.state_dict().items()} if working is not None else {}
    out = frames.clone()
    masks = torch.zeros(frames.shape[0], frames.shape[2], frames.shape[3])
    wanted = [(i, offset + i) for i in range(len(frames)) if inversion.alignments[offset + i] is not None]
    for start in range(0, len(wanted), DECODE_SLICE):
        chunk = wanted[start : start + DECODE_SLICE]
        check_cancel(cancel, "video editing", start)
        rows = [inversion.pivot_of(frame) for _, frame in chunk]
        source = inversion.pivots
        pivots = Latent(source.ws[rows], space=source.space, generator_hash=source.generator_hash)
        edited = edit(pivots) if edit is not None else pivots
        with torch.no_grad():
            naive = synthesize(tuned, edited.to(device))
        for k, (local, frame) in enumerate(chunk):
            alignment = inversion.alignments[frame]
            crop = naive[k : k + 1]
            if working is not None:
                original = crop_with_alignment(frames[local], alignment).to(device).unsqueeze(0) * 2 - 1
                ws = edited.ws[k : k + 1].to(device)
                crop = _stitch(working, tuned_state, ws, original, crop, band, inside, settings)
            pasted, mask = paste_back(frames[local], ((crop[0].cpu() + 1) / 2).clamp(0, 1), alignment, settings.feather)
            out[local], masks[local] = pasted[0], mask
            if progress is not None:
                progress(start + k + 1, len(wanted), {}, None)
    report = {"frames": len(frames), "offset": offset, "edited": len(wanted), "stitch_steps": settings.stitch_steps}
    return out, masks, report


# -------------------------------------------------------------------------------------------------------- metrics


def _gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """Squared image gradient magnitude per pixel ``[N, H, W]`` (forward differences, last row/column repeated)."""
    dx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1, 0, 0), mode="replicate")
    dy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1), mode="replicate")
    return (dx.square() + dy.square()).sum(1)


def seam_gradient_ratio(edited: torch.Tensor, source: torch.Tensor, masks: torch.Tensor) -> float:
    """Gradient energy of ``edited`` frames on the paste seam (where the mask is strictly between 0 and 1, grown by
    one pixel) divided by the source frames' there: about 1 for an invisible seam, above it for a visible edge."""
    seam = ((masks > 0.02) & (masks < 0.98)).float().unsqueeze(1)
    seam = F.max_pool2d(seam, 3, stride=1, padding=1)[:, 0] > 0
    if not seam.any():
        return 1.0
    return float(_gradient_energy(edited)[seam].mean() / _gradient_energy(source)[seam].mean().clamp_min(1e-12))


def outside_mask_change(edited: torch.Tensor, source: torch.Tensor, masks: torch.Tensor) -> float:
    """Largest change (0..1 scale) of any pixel where the paste mask is 0: 0 when paste-back kept them."""
    outside = (masks == 0).unsqueeze(1).expand_as(source)
    return float((edited - source).abs()[outside].max()) if outside.any() else 0.0


def temporal_flicker(frames: torch.Tensor, reference: torch.Tensor, region: torch.Tensor | None = None) -> float:
    """Mean absolute difference between the frame-to-frame changes of ``frames`` and of ``reference`` (0..1 scale),
    over ``region`` ``[N, H, W]`` (both frames of a pair inside it) or everywhere: 0 when the clip changes over time
    exactly as the reference does."""
    change = (frames[1:] - frames[:-1]) - (reference[1:] - reference[:-1])
    if region is None:
        return float(change.abs().mean())
    both = (region[1:] > 0) & (region[:-1] > 0)
    return float(change.abs().mean(1)[both].mean()) if both.any() else 0.0


def direction_edit(
    direction: Any, strength: float, layers: tuple[int, int] | None = None
) -> Callable[[Latent], Latent]:
    """The edit that moves every pivot ``strength`` along ``direction`` (on ``layers``)."""
    return lambda latent: apply_direction(latent, direction, strength, layers)


__all__ = [
    "ClipInversion",
    "outside_mask_change",
    "seam_gradient_ratio",
    "temporal_flicker",
    "VideoError",
    "VideoSettings",
    "detect_clip_landmarks",
    "direction_edit",
    "edit_clip",
    "invert_clip",
    "smooth_alignments",
    "stitch_band",
]

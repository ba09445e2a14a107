"""Video clips with ground truth: the renderer's face moving, turning and smiling along a smooth path over a moving
background, with the true alignment of every frame, noisy "detected" landmarks, and the true edit of every frame.

A frame is the renderer's face crop (an image the embedded model's domain knows, optionally carrying a ``Detail``
it cannot draw) placed into a larger frame by a similarity transform that moves smoothly over time, blended in with
a soft round mask over a drifting striped background. Because the placement is known, so is the crop each frame
should be aligned to: the canonical landmarks below are defined so that ``ffhq_alignment`` of them is the identity
on a crop, and the frame's true landmarks are those points carried through the placement. Used by the video
benchmark and tests; the core never imports this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..align import Alignment, paste_back
from . import faces
from .details import Detail
from .edit_truth import edited_params

MASK_RADIUS = 0.46  # the round mask that blends a crop into its frame (fraction of the crop)
CYCLE_FRAMES = 48  # frames of one full period of the motion and expression paths (2 s at 24 fps)


def canonical_landmarks(crop_size: int) -> np.ndarray:
    """Five points (eyes, nose, mouth corners) whose FFHQ square is exactly a ``crop_size`` crop."""
    size = float(crop_size)
    mouth_drop = 0.25 * size
    eye_avg = np.array([size / 2 - 0.5, size / 2 - 0.5 - 0.1 * mouth_drop])
    offsets = [(-size / 8, 0), (size / 8, 0), (0, mouth_drop / 2), (-size / 10, mouth_drop), (size / 10, mouth_drop)]
    return eye_avg + np.array(offsets)


@dataclass
class Clip:
    """A synthetic clip and its truth. ``frames`` ``[T, 3, H, W]`` in 0..1; ``crops`` the true aligned faces
    ``[T, 3, R, R]`` in 0..1; ``alignments`` the true frame -> crop transforms; ``landmarks`` ``[T, 5, 2]`` what a
    detector would report (truth + noise); ``params`` the renderer parameters of each frame."""

    frames: torch.Tensor
    crops: torch.Tensor
    alignments: list[Alignment]
    landmarks: np.ndarray
    true_landmarks: np.ndarray
    params: torch.Tensor
    detail: Detail | None
    background: torch.Tensor

    def edited(self, attribute: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The true edit of every frame: ``(frames, crops)`` with ``attribute`` changed as ``edit_truth`` does."""
        return self._compose(edited_params(self.params, attribute))

    def _compose(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.crops.shape[-1]
        crops = render_crops(params, size, self.detail)
        return compose(self.background, crops, self.alignments), crops


def render_crops(params: torch.Tensor, size: int, detail: Detail | None) -> torch.Tensor:
    """The renderer's faces for ``params`` ``[T, P]``, one per frame (the same detail layout on every one)."""
    repeated = None if detail is None else Detail(detail.kind, detail.layout.expand(len(params), -1))
    return ((faces.render(params, size, repeated) + 1) / 2).clamp(0, 1)


def _round_mask(size: int) -> torch.Tensor:
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    radius = torch.sqrt(coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2)
    return ((MASK_RADIUS - radius) / 0.06).clamp(0, 1)


def compose(background: torch.Tensor, crops: torch.Tensor, alignments: list[Alignment]) -> torch.Tensor:
    """Each crop placed into its background frame through its alignment, blended with a soft round mask."""
    mask = _round_mask(crops.shape[-1])
    return torch.cat([paste_back(bg, crop, a, mask=mask)[0] for bg, crop, a in zip(background, crops, alignments)])


def _background(frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Diagonal colour stripes drifting across the frame over time."""
    rng = np.random.default_rng(seed)
    colours = torch.tensor(rng.uniform(0.15, 0.85, (2, 3)), dtype=torch.float32)
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    out = []
    for t in range(frames):
        phase = torch.sin((x * 0.8 + y * 0.6) / 9.0 + 0.35 * t) * 0.5 + 0.5
        out.append(torch.lerp(colours[0].view(3, 1, 1), colours[1].view(3, 1, 1), phase))
    return torch.stack(out)


def _placement(t: np.ndarray, crop_size: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth paths of the face's centre (frame px), scale (frame px per crop px) and rotation (radians)."""
    phase = 2 * math.pi * t
    centre = np.stack([width * (0.5 + 0.12 * np.sin(phase)), height * (0.5 + 0.08 * np.sin(phase + 1.9))], 1)
    scale = 0.95 * min(width, height) / crop_size * (1 + 0.12 * np.sin(phase + 1.0))
    angle = np.radians(8.0) * np.sin(phase + 0.3)
    return centre, scale, angle


def make_clip(
    frames: int = 16,
    seed: int = 0,
    crop_size: int = 64,
    frame_size: tuple[int, int] = (144, 112),
    kind: str | None = "tattoo",
    landmark_noise: float = 1.0,
) -> Clip:
    """A seeded clip: one identity (renderer latent ``seed``) turning its head and smiling along smooth paths,
    moving, growing and tilting in a ``frame_size`` (width, height) frame; ``landmark_noise`` is the standard
    deviation (frame pixels) added to the true landmarks."""
    width, height = frame_size
    params = faces.params_from_z(faces.sample_z(1, seed)).repeat(frames, 1)
    t = np.arange(frames) / CYCLE_FRAMES
    path = torch.tensor(np.sin(2 * math.pi * t), dtype=torch.float32)
    params[:, faces.ATTRIBUTE_NAMES.index("yaw")] = 0.5 + 0.2 * path
    params[:, faces.ATTRIBUTE_NAMES.index("smile")] = 0.55 + 0.3 * torch.tensor(np.sin(2 * math.pi * t + 1.2))
    detail = Detail.sample(kind, 1, seed + 1) if kind else None
    crops = render_crops(params, crop_size, detail)
    centre, scale, angle = _placement(t, crop_size, width, height)
    canonical = canonical_landmarks(crop_size)
    mid = crop_size / 2 - 0.5
    alignments, true_landmarks = [], []
    for i in range(frames):
        rotation = np.array([[math.cos(angle[i]), -math.sin(angle[i])], [math.sin(angle[i]), math.cos(angle[i])]])
        to_frame = np.eye(3)
        to_frame[:2, :2] = scale[i] * rotation
        to_frame[:2, 2] = centre[i] - to_frame[:2, :2] @ np.array([mid, mid])
        forward = np.linalg.inv(to_frame)
        alignments.append(Alignment(forward[:2].tolist(), crop_size, (width, height), method="truth"))
        true_landmarks.append(canonical @ to_frame[:2, :2].T + to_frame[:2, 2])
    true_landmarks = np.stack(true_landmarks)
    noise = np.random.default_rng(seed + 2).normal(0.0, landmark_noise, true_landmarks.shape)
    background = _background(frames, height, width, seed + 3)
    video = compose(background, crops, alignments)
    return Clip(video, crops, alignments, true_landmarks + noise, true_landmarks, params, detail, background)


# ----------------------------------------------------------------------------------------------- measured against truth

IDENTITY_ATTRIBUTES = (
    "skin_tone",
    "face_width",
    "jaw",
    "hair_color",
    "hair_length",
    "fringe",
    "iris_color",
    "mouth_width",
    "shirt_color",
)  # what stays the same person's: pose, expression, light, position and glasses are left out


def _alignment_deviations(alignments: list[Alignment], truth: list[Alignment]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the crop centre's offset from the true one (frame pixels, ``[T, 2]``) and the crop size's relative
    deviation (``[T]``)."""
    centres, sizes = [], []
    for estimate, true in zip(alignments, truth):
        mid = (true.crop_size - 1) / 2
        centres.append(estimate.to_source([[mid, mid]])[0] - true.to_source([[mid, mid]])[0])
        sizes.append(true.scale / estimate.scale - 1.0)  # source pixels per crop pixel, relative
    return np.array(centres), np.array(sizes)


def alignment_errors(alignments: list[Alignment], truth: list[Alignment]) -> tuple[float, float]:
    """RMS error of the crop centre (frame pixels) and relative RMS error of the crop size, against the truth."""
    centres, sizes = _alignment_deviations(alignments, truth)
    return float(np.sqrt(np.mean(np.sum(centres**2, 1)))), float(np.sqrt(np.mean(sizes**2)))


def alignment_jitter(alignments: list[Alignment], truth: list[Alignment]) -> tuple[float, float]:
    """How much the crop shakes against the true motion: the RMS frame-to-frame change of the centre's error (frame
    pixels) and of the size's relative error. A steady offset does not shake; detector noise does."""
    centres, sizes = _alignment_deviations(alignments, truth)
    return (
        float(np.sqrt(np.mean(np.sum(np.diff(centres, axis=0) ** 2, 1)))),
        float(np.sqrt(np.mean(np.diff(sizes) ** 2))),
    )


def identity_embeddings(crops: torch.Tensor, excluded: tuple[str, ...] = ()) -> torch.Tensor:
    """Identity vectors of aligned 64 px renderer faces ``[N, 3, R, R]`` in 0..1: the attribute regressor's
    predictions of the identity attributes (minus ``excluded``, e.g. the edited one), centred on the population
    mean 0.5. Unit-normalised, so their dot product is a cosine similarity."""
    from .attributes import predict_attributes

    names = [n for n in IDENTITY_ATTRIBUTES if n not in excluded]
    columns = [faces.ATTRIBUTE_NAMES.index(n) for n in names]
    resized = (
        torch.nn.functional.interpolate(crops * 2 - 1, size=64, mode="area") if crops.shape[-1] != 64 else crops * 2 - 1
    )
    vectors = predict_attributes(resized)[:, columns] - 0.5
    return torch.nn.functional.normalize(vectors, dim=1)


def temporal_identity(embeddings: torch.Tensor) -> tuple[float, float]:
    """STIT's local and global identity consistency before normalisation: the mean similarity of adjacent frames
    and of all pairs of frames."""
    similarity = embeddings @ embeddings.T
    count = len(embeddings)
    local = float(torch.diagonal(similarity, 1).mean()) if count > 1 else 1.0
    upper = similarity[torch.triu(torch.ones(count, count, dtype=torch.bool), 1)]
    return local, float(upper.mean()) if upper.numel() else 1.0

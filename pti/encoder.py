"""Encoders that map a photo to a latent in one forward pass: e4e, pSp and this project's own small encoders.

The networks follow "Designing an Encoder for StyleGAN Image Manipulation" (e4e, Tov et al. 2021) and
"Encoding in Style" (pSp, Richardson et al. 2021): an IR-SE ResNet backbone with a feature pyramid, and one
*map2style* block per W+ layer. e4e predicts one w for every layer plus a per-layer delta (it is trained to keep
the deltas small, which keeps the result editable); pSp predicts each layer independently. Module and parameter
names are those of the published checkpoints, so ``load_encoder`` reads ``e4e_ffhq_encode.pt`` and pSp's
``psp_ffhq_encode.pt`` as they are, through the allow-list reader (``pti.safe_pickle``, never ``torch.load``).

``EncoderConfig`` makes the same design smaller (stage widths, unit counts, input size), which is how the encoder
shipped for the embedded 64 px model is built (``tools/train_encoder.py``, ``docs/encoder.md``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import CheckpointError, read_safetensors, write_safetensors
from .safe_pickle import Namespace, PickleError, TensorRef, TorchArchive

ENCODER_FORMAT = "pti-encoder"
ENCODER_FORMAT_VERSION = "1"
ARCHS = ("e4e", "psp", "w")
SUPPORTED_ENCODERS = "e4e and pSp checkpoints (.pt) as published, this project's encoder .safetensors"

# The published encoders' ``opts.encoder_type`` -> this module's ``arch``.
_ENCODER_TYPES = {
    "Encoder4Editing": "e4e",
    "GradualStyleEncoder": "psp",
    "BackboneEncoderUsingLastLayerIntoW": "w",
}
# Units per stage of the IR-SE backbones (ResNet-50/100/152 layouts of InsightFace).
_BACKBONE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


# ----------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class EncoderConfig:
    """What an encoder is built with (defaults: the published e4e for a 1024 px FFHQ StyleGAN2)."""

    arch: str = "e4e"  # "e4e" (w + per-layer deltas), "psp" (one map2style per layer), "w" (one w, pooled).
    num_ws: int = 18  # W+ layers of the target generator (2 * log2(resolution) - 2).
    w_dim: int = 512  # Width of w.
    stage_units: tuple[int, ...] = (3, 4, 14, 3)  # Bottleneck units per backbone stage (IR-SE-50).
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)  # Output channels per stage; the stem has the first.
    squeeze_excite: bool = True  # IR-SE units ("ir_se") rather than plain IR ("ir").
    input_resolution: int = 256  # Images are resized to this before encoding (e4e/pSp are trained at 256).
    coarse_layers: int = 3  # Layers read from the coarsest pyramid level ...
    middle_layers: int = 7  # ... layers below this index from the middle level, the rest from the finest.

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if len(self.stage_units) != 4 or len(self.stage_channels) != 4:
            raise ValueError("stage_units and stage_channels need four entries (the backbone has four stages)")
        if self.input_resolution < 32 or self.input_resolution & (self.input_resolution - 1):
            raise ValueError(f"input_resolution must be a power of two >= 32, got {self.input_resolution}")
        if self.num_ws < 1 or self.w_dim < 1:
            raise ValueError("num_ws and w_dim must be positive")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EncoderConfig:
        fields = json.loads(text)
        for key in ("stage_units", "stage_channels"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks (names as in the published checkpoints)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate of StyleGAN2 (weight scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = in_features**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class SqueezeExcite(nn.Module):
    """Channel attention: global average, bottleneck of 1x1 convolutions, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, max(1, channels // reduction), 1, bias=False)
        self.fc2 = nn.Conv2d(max(1, channels // reduction), channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * gate


class Subsample(nn.Module):
    """The identity shortcut of a strided unit: every ``stride``-th pixel (a 1x1 max-pool)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class BottleneckIR(nn.Module):
    """InsightFace's improved residual unit: BN, conv, PReLU, strided conv, BN (+ squeeze-excite)."""

    def __init__(self, in_channels: int, channels: int, stride: int, squeeze_excite: bool):
        super().__init__()
        if in_channels == channels:
            self.shortcut_layer: nn.Module = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )
        layers = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
        ]
        if squeeze_excite:
            layers.append(SqueezeExcite(channels))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class MapToStyle(nn.Module):
    """pSp's map2style (``GradualStyleBlock``): strided 3x3 convs down to 1x1, then an equalised linear layer."""

    def __init__(self, in_channels: int, w_dim: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(max(1, int(math.log2(spatial)))):
            layers += [nn.Conv2d(in_channels if index == 0 else w_dim, w_dim, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(w_dim, w_dim)
        self.w_dim = w_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"map2style expected features that reduce to 1x1, got {list(x.shape)}")
        return self.linear(x.flatten(1))


def _upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Feature-pyramid merge: bilinear upsampling (corners aligned, as the published encoders) plus the lateral."""
    return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


# ----------------------------------------------------------------------------------------------------------------------
# Encoders


class StyleEncoder(nn.Module):
    """Backbone + feature pyramid + map2style heads: ``[N, 3, R, R]`` in [-1, 1] -> codes ``[N, num_ws, w_dim]``.

    Codes are relative to ``latent_avg`` (see ``Encoder``). ``arch`` picks how the heads combine (module docstring).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        stem = config.stage_channels[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        units: list[nn.Module] = []
        in_channels = stem
        for count, channels in zip(config.stage_units, config.stage_channels):
            for index in range(count):
                stride = 2 if index == 0 else 1
                units.append(BottleneckIR(in_channels, channels, stride, config.squeeze_excite))
                in_channels = channels
        self.body = nn.Sequential(*units)
        ends = [sum(config.stage_units[: i + 1]) - 1 for i in range(4)]
        self._taps = {ends[1]: "fine", ends[2]: "middle", ends[3]: "coarse"}  # e4e's body indices 6, 20, 23
        top = config.stage_channels[3]
        if config.arch == "w":
            self.linear = EqualLinear(top, config.w_dim)
            return
        size = config.input_resolution // 16  # spatial size of the coarsest pyramid level
        self.styles = nn.ModuleList(
            MapToStyle(top, config.w_dim, size * self._level_scale(i)) for i in range(config.num_ws)
        )
        self.latlayer1 = nn.Conv2d(config.stage_channels[2], top, 1)
        self.latlayer2 = nn.Conv2d(config.stage_channels[1], top, 1)

    def _level_scale(self, layer: int) -> int:
        if layer < self.config.coarse_layers:
            return 1
        return 2 if layer < self.config.middle_layers else 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        if self.config.arch == "w":
            w = self.linear(self.body(x).mean((2, 3)))
            return w.unsqueeze(1).repeat(1, self.config.num_ws, 1)
        taps = {}
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self._taps:
                taps[self._taps[index]] = x
        # The finer pyramid levels are built only when a layer reads them (as the published code does).
        levels: dict[int, torch.Tensor] = {1: taps["coarse"]}

        def level(scale: int) -> torch.Tensor:
            if scale not in levels:
                if scale == 2:
                    levels[2] = _upsample_add(levels[1], self.latlayer1(taps["middle"]))
                else:
                    levels[4] = _upsample_add(level(2), self.latlayer2(taps["fine"]))
            return levels[scale]

        if self.config.arch == "psp":
            return torch.stack([style(level(self._level_scale(i))) for i, style in enumerate(self.styles)], dim=1)
        w0 = self.styles[0](levels[1])
        deltas = [torch.zeros_like(w0)] + [style(level(self._level_scale(i))) for i, style in enumerate(self.styles)][
            1:
        ]
        return w0.unsqueeze(1) + torch.stack(deltas, dim=1)


class Encoder(nn.Module):
    """A ready-to-use encoder: images ``[N, 3, H, W]`` in [-1, 1] -> ws ``[N, num_ws, w_dim]`` (latent_avg added).

    Images of another size are resized (bilinear, antialiased) to ``config.input_resolution`` first. ``meta``
    records where the weights came from (format, options of the original training, provenance).
    """

    def __init__(self, config: EncoderConfig, latent_avg: torch.Tensor | None = None, meta: dict | None = None):
        super().__init__()
        self.config = config
        self.net = StyleEncoder(config)
        avg = (
            torch.zeros(1, config.w_dim)
            if latent_avg is None
            else latent_avg.detach().float().reshape(-1, config.w_dim)
        )
        if avg.shape[0] not in (1, config.num_ws):
            raise ValueError(f"latent_avg has {avg.shape[0]} rows; expected 1 or num_ws={config.num_ws}")
        self.register_buffer("latent_avg", avg.clone())
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"the encoder takes images [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
        size = self.config.input_resolution
        images = images.to(self.latent_avg.device, self.latent_avg.dtype)
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.net(images) + self.latent_avg.unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------------------
# Reading and writing


def _published_config(opts: dict[str, Any], state: dict[str, Any], path: Path) -> EncoderConfig:
    """The ``EncoderConfig`` of an e4e / pSp checkpoint from its ``opts`` and the shapes of its weights."""
    encoder_type = opts.get("encoder_type", "Encoder4Editing" if "stylegan_size" in opts else "GradualStyleEncoder")
    arch = _ENCODER_TYPES.get(str(encoder_type))
    if arch is None:
        raise CheckpointError(
            f"{path}: encoder_type {encoder_type!r} is not supported (supported: {', '.join(_ENCODER_TYPES)})"
        )
    if int(opts.get("input_nc", 3)) != 3:
        raise CheckpointError(f"{path}: this pSp model takes {opts.get('input_nc')}-channel inputs, not RGB photos")
    size = int(opts.get("stylegan_size", opts.get("output_size", 1024)))
    # Stages are the runs of units of equal width (64, 128, 256, 512 in IR-SE-50/100/152).
    widths = []
    while f"body.{len(widths)}.res_layer.1.weight" in state:
        widths.append(int(state[f"body.{len(widths)}.res_layer.1.weight"].shape[0]))
    runs: list[list[int]] = []
    for width in widths:
        if runs and runs[-1][0] == width:
            runs[-1][1] += 1
        else:
            runs.append([width, 1])
    if len(runs) != 4:
        raise CheckpointError(f"{path}: expected a four-stage IR backbone under 'encoder.body.*', found widths {runs}")
    units, channels = [count for _, count in runs], [width for width, _ in runs]
    if arch == "w":
        w_dim = int(state["linear.weight"].shape[0])
    else:
        w_dim = int(state["styles.0.linear.weight"].shape[0])
    return EncoderConfig(
        arch=arch,
        num_ws=2 * int(math.log2(size)) - 2,
        w_dim=w_dim,
        stage_units=tuple(units),
        stage_channels=tuple(channels),
        squeeze_excite="body.0.res_layer.5.fc1.weight" in state,
    )


def _read_published(path: Path) -> Encoder:
    try:
        with TorchArchive(path) as archive:
            ckpt = archive.load()
            if not isinstance(ckpt, dict):
                raise CheckpointError(f"{path}: expected a dict with 'state_dict', found {type(ckpt).__name__}")
            state = ckpt.get("state_dict", ckpt)
            if not isinstance(state, dict):
                raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a dict")
            encoder_state = {
                key[len("encoder.") :]: _load_ref(value, path, key)
                for key, value in state.items()
                if isinstance(key, str) and key.startswith("encoder.")
            }
            avg = ckpt.get("latent_avg")
            latent_avg = _load_ref(avg, path, "latent_avg") if avg is not None else None
            opts = _options(ckpt.get("opts"))
    except PickleError as exc:
        raise CheckpointError(f"{path}: cannot read this torch file safely ({exc})") from exc
    if not encoder_state:
        raise CheckpointError(f"{path}: no 'encoder.*' weights; is this an e4e / pSp checkpoint?")
    config = _published_config(opts, encoder_state, path)
    if not opts.get("start_from_latent_avg", latent_avg is not None):
        latent_avg = None  # pSp adds latent_avg only when trained with --start_from_latent_avg
    elif latent_avg is None:
        raise CheckpointError(f"{path}: trained with start_from_latent_avg but holds no 'latent_avg'")
    meta = {"format": "e4e" if config.arch == "e4e" else "psp", "source": path.name, "opts": opts}
    return _build(config, encoder_state, latent_avg, meta, path)


def _load_ref(value: Any, path: Path, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, TensorRef):
        raise CheckpointError(f"{path}: '{name}' is a {type(value).__name__}, not a tensor")
    return value.load()


def _options(value: Any) -> dict[str, Any]:
    """Training options (a dict, or an ``argparse.Namespace`` stand-in) reduced to their plain scalar entries."""
    if isinstance(value, Namespace):
        value = value.values
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if v is None or isinstance(v, (bool, int, float, str))}


def _build(
    config: EncoderConfig, state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None, meta: dict, path: Path
) -> Encoder:
    if latent_avg is not None and latent_avg.numel() not in (config.w_dim, config.num_ws * config.w_dim):
        raise CheckpointError(
            f"{path}: latent_avg has shape {list(latent_avg.shape)}; expected [{config.w_dim}] or "
            f"[{config.num_ws}, {config.w_dim}]"
        )
    with torch.device("meta"):
        encoder = Encoder(config, meta=meta)
    encoder.latent_avg = (
        (latent_avg if latent_avg is not None else torch.zeros(1, config.w_dim)).float().reshape(-1, config.w_dim)
    )
    expected = encoder.net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: encoder weights do not match a {config.arch} encoder of this layout "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{path}: '{name}' has shape {list(tensor.shape)}, expected {list(expected[name].shape)}"
            )
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    encoder.net.load_state_dict(floats, assign=True)
    # Buffers that are not in the state dict (none today) would stay on the meta device: refuse rather than crash.
    if any(t.is_meta for t in encoder.state_dict().values()):
        raise CheckpointError(f"{path}: some encoder tensors were not found in the file")
    return encoder.eval().requires_grad_(False)


def save_encoder(encoder: Encoder, path: str | os.PathLike, fp16: bool = False, provenance: dict | None = None) -> Path:
    """Save as a self-describing ``.safetensors`` (weights under ``encoder.*``, ``latent_avg``, config in metadata)."""
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {
        f"encoder.{name}": t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype)
        for name, t in encoder.net.state_dict().items()
    }
    tensors["latent_avg"] = encoder.latent_avg.detach().to("cpu", torch.float32)
    metadata = {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "config": encoder.config.to_json(),
        "provenance": json.dumps(provenance or encoder.meta.get("provenance", {}), sort_keys=True),
    }
    return write_safetensors(path, tensors, metadata)


def _read_own(path: Path) -> Encoder:
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path}: not a PTI encoder (format {metadata.get('format')!r}, need {ENCODER_FORMAT!r})")
    try:
        config = EncoderConfig.from_json(metadata["config"])
        provenance = json.loads(metadata.get("provenance", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed encoder metadata ({exc})") from None
    state = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    meta = {"format": ENCODER_FORMAT, "source": path.name, "provenance": provenance}
    return _build(config, state, tensors.get("latent_avg"), meta, path)


def load_encoder(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Encoder:
    """Read an encoder: e4e / pSp ``.pt`` checkpoints as published, or this project's ``.safetensors``.

    ``None`` is the encoder shipped for the embedded default generator. The result is in eval mode with gradients
    off; call it on images ``[N, 3, H, W]`` in [-1, 1] to get ws ``[N, num_ws, w_dim]`` (latent_avg added, as pSp
    does with ``start_from_latent_avg``). Pickled files are read by the allow-list reader: no code in them runs.
    """
    source = DEFAULT_ENCODER if path is None else Path(path).expanduser()
    if not source.is_file():
        raise CheckpointError(f"encoder not found: {source} (supported: {SUPPORTED_ENCODERS})")
    with open(source, "rb") as f:
        head = f.read(16)
    read = _read_published if head[:2] == b"PK" or head[:1] == b"\x80" else _read_own
    try:
        encoder = read(source)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{source}: the file nests containers implausibly deep") from None
    except (TypeError, ValueError, KeyError, RuntimeError, OverflowError, AttributeError, IndexError) as exc:
        # A damaged or hand-made file whose values do not describe an encoder this module can build.
        raise CheckpointError(f"{source}: not a usable encoder checkpoint ({type(exc).__name__}: {exc})") from None
    return encoder.to(device)


DEFAULT_ENCODER = Path(__file__).resolve().parent / "default_model" / "encoder.safetensors"


def default_encoder_available() -> bool:
    """Whether the encoder for the embedded generator is installed (it ships with the pack)."""
    return DEFAULT_ENCODER.is_file()

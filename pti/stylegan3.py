"""StyleGAN3 (alias-free) generator in plain PyTorch, configs T and R, conditional or not.

Parameter and buffer names are those of NVIDIA's ``training/networks_stylegan3.py`` (``mapping.fc0.weight``,
``synthesis.input.transform``, ``synthesis.L3_52_1024.magnitude_ema``, ...), so its state dicts load with
``strict=True``, and the call signature is the same::

    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, channel_base=32768)
    ws = G.mapping(z, c, truncation_psi=0.7)     # [N, num_ws, w_dim], num_ws = num_layers + 2
    img = G.synthesis(ws)                         # [N, 3, 1024, 1024]

How the synthesis network works, in the order the code runs:

* ``SynthesisInput``: Fourier features. ``channels`` fixed random frequencies (inside a disc of radius
  ``bandwidth``) and phases are sampled on a grid; ``ws[0]`` predicts a rotation and translation of that grid, and
  the ``transform`` buffer (identity by default, an *inverse* 3x3 transform of the output image) lets a user
  translate and rotate the picture without re-rendering anything else (see :func:`set_transform`).
* ``SynthesisLayer`` x ``num_layers``: modulated convolution (3x3 for config T, 1x1 for R) whose input is divided
  by the square root of ``magnitude_ema`` (the running mean square of its input recorded during training), then
  :func:`pti.ops.filtered_lrelu`: upsample (``lrelu_upsampling`` times the larger sampling rate), leaky ReLU, and a
  low-pass filter back down. The filter cutoffs and sampling rates follow a geometric schedule from
  ``first_cutoff`` to ``img_resolution / 2``; the last ``num_critical`` layers are critically sampled; every layer
  but the last two carries a ``margin_size`` border.
* the last layer is the ToRGB layer (1x1, no demodulation, no activation); the output is scaled by
  ``output_scale``.

``use_fp16`` is recorded but everything runs in float32 (NVIDIA's code also uses fp32 on the CPU). There is no noise
input; ``noise_mode`` and ``noises`` are accepted for call compatibility with :mod:`pti.networks` and ignored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import ops
from .lineage import mark_derived
from .networks import FullyConnectedLayer

#: ``Generator`` keyword arguments this module understands (NVIDIA's names), with the bounds a checkpoint may use.
_LIMITS = {
    "z_dim": (0, 4096),
    "c_dim": (0, 100_000),
    "w_dim": (1, 4096),
    "img_resolution": (4, 4096),
    "img_channels": (1, 4),
    "channel_base": (1, 1 << 20),
    "channel_max": (1, 4096),
    "num_layers": (2, 64),
    "num_critical": (0, 64),
    "margin_size": (0, 256),
    "conv_kernel": (1, 7),
    "filter_size": (1, 32),
    "lrelu_upsampling": (1, 8),
    "num_fp16_res": (0, 16),
}
_SYNTHESIS_KEYS = {
    "channel_base",
    "channel_max",
    "num_layers",
    "num_critical",
    "first_cutoff",
    "first_stopband",
    "last_stopband_rel",
    "margin_size",
    "output_scale",
    "num_fp16_res",
    "conv_kernel",
    "filter_size",
    "lrelu_upsampling",
    "use_radial_filters",
    "conv_clamp",
    "magnitude_ema_beta",
}


def is_stylegan3_state(names: Any) -> bool:
    """Whether a state dict (or its names) is a StyleGAN3 generator's: it has the Fourier-feature input."""
    return any(str(name).startswith("synthesis.input.") for name in names)


def check_config(config: dict[str, Any]) -> None:
    """Refuse generator kwargs outside what any StyleGAN3 checkpoint uses, before anything is built (``ValueError``).

    Filter design and layer geometry are computed on the CPU even when the network is built on the meta device, so
    a damaged or hostile file must not be able to ask for a 10^6-tap filter or a million layers.
    """
    unknown = set(config) - set(_LIMITS) - _SYNTHESIS_KEYS - {"mapping_kwargs"}
    if unknown:
        raise ValueError(f"unknown StyleGAN3 generator arguments {sorted(unknown)}")
    for key, (low, high) in _LIMITS.items():
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{key}={value!r} is outside {low}..{high}")
    for key in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale", "magnitude_ema_beta"):
        value = config.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e4:
            raise ValueError(f"{key}={value!r} must be a positive number")
    clamp = config.get("conv_clamp", 256)
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0):
        raise ValueError(f"conv_clamp={clamp!r} must be None or a positive number")
    if not isinstance(config.get("use_radial_filters", False), bool):
        raise ValueError(f"use_radial_filters={config['use_radial_filters']!r} must be true or false")
    if config.get("num_critical", 2) >= config.get("num_layers", 14):
        raise ValueError("num_critical must be smaller than num_layers")
    mapping = config.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict) or not 0 <= mapping.get("num_layers", 2) <= 64:
        raise ValueError(f"mapping_kwargs {mapping!r} must be a dict with num_layers in 0..64")


# ----------------------------------------------------------------------------------------------------------------------
# Filter design


def _kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window beta for a filter of ``numtaps`` whose transition band is ``width`` (fraction of Nyquist)."""
    attenuation = 2.285 * (numtaps - 1) * math.pi * width + 7.95  # dB, Kaiser's estimate
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Kaiser-windowed low-pass filter: 1-D separable taps, or a 2-D radially symmetric (jinc) filter.

    ``cutoff`` and the transition ``width`` are in the same units as the sampling rate ``fs``; the taps sum to one.
    ``numtaps == 1`` is the identity (``None``). The separable filter is the windowed-sinc design of
    ``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)``.
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyquist = fs / 2
    window = np.kaiser(numtaps, _kaiser_beta(numtaps, width / nyquist))
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        taps = (cutoff / nyquist) * np.sinc((cutoff / nyquist) * m) * window
        return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64)
    f = torch.special.bessel_j1(2 * cutoff * math.pi * r) / (math.pi * r)
    f = f * torch.as_tensor(np.outer(window, window))
    return (f / f.sum()).to(torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution: weights and styles pre-normalised, one grouped convolution per batch.

    ``x`` ``[N, I, H, W]``, ``weight`` ``[O, I, k, k]``, ``styles`` ``[N, I]``; ``input_gain`` (a scalar or
    ``[I]``) scales the input channels after demodulation (the inverse input magnitude).
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (batch, in_channels) or x.shape[1] != in_channels:
        raise ValueError(f"x {list(x.shape)} and styles {list(styles.shape)} do not fit weight {list(weight.shape)}")
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, out_channels, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(batch, in_channels).reshape(batch, 1, in_channels, 1, 1)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    x = nn.functional.conv2d(x, w.reshape(-1, in_channels, kh, kw).to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class MappingNetwork(nn.Module):
    """z (+ label c) -> w broadcast to ``num_ws`` layers, with the running average of w for truncation."""

    def __init__(
        self,
        z_dim: int,  # Input latent (z) dimensionality.
        c_dim: int,  # Conditioning label (c) dimensionality, 0 = unconditional.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        num_ws: int,  # Number of w vectors to output.
        num_layers: int = 2,  # Number of mapping layers.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the mapping layers.
        w_avg_beta: float = 0.998,  # Decay of the running average of w during training.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnectedLayer(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            fc = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", fc)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        skip_w_avg_update: bool = True,  # accepted for pti.networks compatibility; only update_emas updates w_avg
    ) -> torch.Tensor:
        if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {None if z is None else list(z.shape)}")
        x = ops.normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"c must be [{z.shape[0]}, {self.c_dim}], got {None if c is None else list(c.shape)}")
            x = torch.cat([x, ops.normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisInput(nn.Module):
    """Fourier features on a ``size`` grid, rotated and translated by ``ws[0]`` and by the ``transform`` buffer."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (w) dimensionality.
        channels: int,  # Number of output channels (frequencies).
        size: int | Sequence[int],  # Output size: int or [width, height].
        sampling_rate: float,  # Output sampling rate.
        bandwidth: float,  # Radius of the disc the frequencies are drawn from.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)  # predicts (cos, sin, tx, ty); starts at the identity
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))  # inverse transform of the output image, set by users
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # unit rotation (cos, sin), translation (tx, ty)
        cos, sin, tx, ty = t.unbind(1)
        one, zero = torch.ones_like(cos), torch.zeros_like(cos)
        # Inverse rotation times inverse translation, then the user's transform: [N, 3, 3].
        rotation = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).reshape(batch, 3, 3)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1).reshape(batch, 3, 3)
        transforms = rotation @ translation @ self.transform.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2]
        # Frequencies the user's transform pushed out of band fade out instead of aliasing.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        width, height = self.size
        xs = (torch.arange(width, device=w.device, dtype=torch.float32) + 0.5 - width / 2) / self.sampling_rate
        ys = (torch.arange(height, device=w.device, dtype=torch.float32) + 0.5 - height / 2) / self.sampling_rate
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
        x = torch.einsum("hwk,nck->nhwc", grid, freqs) + phases.reshape(batch, 1, 1, -1)
        x = torch.sin(x * (2 * math.pi)) * amplitudes.reshape(batch, 1, 1, -1)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, np.integer)) else (int(value[0]), int(value[1]))


class SynthesisLayer(nn.Module):
    """Modulated convolution followed by the filtered leaky ReLU (or, for the last layer, ToRGB)."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (w) dimensionality.
        is_torgb: bool,  # The final ToRGB layer (1x1, no demodulation, no activation)?
        is_critically_sampled: bool,  # Critically sampled (one of the last layers)?
        use_fp16: bool,  # NVIDIA runs this layer in fp16 on CUDA; recorded only, this port computes in fp32.
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        in_size: int | Sequence[int],  # Input size: int or [width, height].
        out_size: int | Sequence[int],  # Output size: int or [width, height].
        in_sampling_rate: float,  # Input sampling rate.
        out_sampling_rate: float,  # Output sampling rate.
        in_cutoff: float,  # Input cutoff frequency.
        out_cutoff: float,  # Output cutoff frequency.
        in_half_width: float,  # Input transition band half-width.
        out_half_width: float,  # Output transition band half-width.
        conv_kernel: int = 3,  # Convolution kernel size (ignored for ToRGB: 1).
        filter_size: int = 6,  # Low-pass filter taps relative to the lower resolution when resampling.
        lrelu_upsampling: int = 2,  # Relative sampling rate of the leaky ReLU (ignored for ToRGB).
        use_radial_filters: bool = False,  # Radially symmetric downsampling filter (config R)?
        conv_clamp: float | None = 256,  # Clamp the output to +-X, None = no clamping.
        magnitude_ema_beta: float = 0.999,  # Decay of the running mean square of the input (training only).
    ):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = _pair(in_size)
        self.out_size = _pair(out_size)
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(round(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(round(self.tmp_sampling_rate / out_sampling_rate))
        if in_sampling_rate * self.up_factor != self.tmp_sampling_rate or (
            out_sampling_rate * self.down_factor != self.tmp_sampling_rate
        ):
            raise ValueError(f"sampling rates {in_sampling_rate} -> {out_sampling_rate} are not integer multiples")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        up_filter = design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate)
        down_filter = design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial
        )
        self.register_buffer("up_filter", up_filter)
        self.register_buffer("down_filter", down_filter)

        # Pad so that the output samples sit symmetrically over the input ones (the paper's Appendix C.3).
        padding = []
        for axis in (0, 1):
            total = (self.out_size[axis] - 1) * self.down_factor + 1
            total -= (self.in_size[axis] + self.conv_kernel - 1) * self.up_factor
            total += self.up_taps + self.down_taps - 2
            low = (total + self.up_factor) // 2
            padding += [low, total - low]
        self.padding = padding  # [x0, x1, y0, y1]

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", update_emas: bool = False, **unused: Any
    ) -> torch.Tensor:
        expected = (self.in_channels, self.in_size[1], self.in_size[0])
        if tuple(x.shape[1:]) != expected or w.shape != (x.shape[0], self.w_dim):
            raise ValueError(f"layer input {list(x.shape)} / w {list(w.shape)}, expected [N, {list(expected)}]")
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        x = modulated_conv2d(
            x.to(torch.float32),
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        return ops.filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=1 if self.is_torgb else math.sqrt(2),
            slope=1 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )

    def extra_repr(self) -> str:
        return (
            f"is_torgb={self.is_torgb}, in={self.in_channels}x{list(self.in_size)}@{self.in_sampling_rate:g}, "
            f"out={self.out_channels}x{list(self.out_size)}@{self.out_sampling_rate:g}, "
            f"cutoff {self.in_cutoff:g}->{self.out_cutoff:g}, up {self.up_factor}, down {self.down_factor}"
        )


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image: Fourier input, ``num_layers`` synthesis layers, ToRGB."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (w) dimensionality.
        img_resolution: int,  # Output resolution.
        img_channels: int,  # Number of color channels.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_layers: int = 14,  # Layers excluding the Fourier input and ToRGB.
        num_critical: int = 2,  # Critically sampled layers at the end.
        first_cutoff: float = 2,  # Cutoff frequency of the first layer.
        first_stopband: float = 2**2.1,  # Minimum stopband of the first layer.
        last_stopband_rel: float = 2**0.3,  # Minimum stopband of the last layer, relative to its cutoff.
        margin_size: int = 10,  # Extra pixels computed outside the image.
        output_scale: float = 0.25,  # Scale factor of the output image.
        num_fp16_res: int = 4,  # NVIDIA's fp16 layers (recorded only).
        **layer_kwargs: Any,  # Arguments for SynthesisLayer.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Geometric schedule of cutoffs and minimum stopbands, computed in float64 exactly as NVIDIA does.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(
            w_dim=w_dim,
            channels=int(channels[0]),
            size=int(sizes[0]),
            sampling_rate=float(sampling_rates[0]),
            bandwidth=float(cutoffs[0]),
        )
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(sampling_rates[idx] * 2**num_fp16_res > img_resolution),
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]),
                out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]),
                out_half_width=float(half_widths[idx]),
                **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        """The synthesis layers in order, ToRGB last (layer ``i`` reads ``ws[i + 1]``)."""
        return [getattr(self, name) for name in self.layer_names]

    def noise_layers(self) -> dict[str, nn.Module]:
        """StyleGAN3 has no noise inputs (kept for the interface :mod:`pti.networks` offers)."""
        return {}

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noises: dict[str, torch.Tensor] | None = None,
        update_emas: bool = False,
        **unused: Any,
    ) -> torch.Tensor:
        """Render ``ws``; ``noise_mode`` is accepted and unused (no noise), ``noises`` must be empty."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noises:
            raise ValueError(f"StyleGAN3 has no noise inputs, got noise maps {sorted(noises)}")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for layer, w in zip(self.layers(), ws[1:]):
            x = layer(x, w, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(nn.Module):
    """StyleGAN3 generator: ``G(z, c) = G.synthesis(G.mapping(z, c))``; kwargs as NVIDIA's (flat synthesis args)."""

    def __init__(
        self,
        z_dim: int,  # Input latent (z) dimensionality.
        c_dim: int,  # Conditioning label (c) dimensionality, 0 = unconditional.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        img_resolution: int,  # Output resolution.
        img_channels: int,  # Number of output color channels.
        mapping_kwargs: dict[str, Any] | None = None,  # Arguments for MappingNetwork.
        **synthesis_kwargs: Any,  # Arguments for SynthesisNetwork and SynthesisLayer.
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        self.init_kwargs = copy.deepcopy(
            dict(
                z_dim=z_dim,
                c_dim=c_dim,
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_kwargs=mapping_kwargs,
                **synthesis_kwargs,
            )
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    @property
    def config_name(self) -> str:
        """``"stylegan3-r"`` (1x1 convolutions, radial filters) or ``"stylegan3-t"``."""
        return "stylegan3-r" if self.init_kwargs.get("conv_kernel", 3) == 1 else "stylegan3-t"

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def num_parameters(self) -> int:
        """Number of learnable scalars."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"{self.config_name}, z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
            f"img_resolution={self.img_resolution}, img_channels={self.img_channels}"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Translation and rotation through the input transform


def transform_matrix(translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The 3x3 value of ``synthesis.input.transform`` that moves the picture by ``translate`` and turns it by
    ``rotate`` degrees (counter-clockwise as displayed) about the image centre.

    ``translate`` is ``(x, y)`` in image widths (every layer samples one unit of its coordinates across the image):
    ``(0.25, 0)`` moves the content a quarter of the width to the right, positive y moves it down. The buffer holds
    the inverse of that image transform, NVIDIA's convention (their ``gen_images.py --translate --rotate`` sets
    the same matrix). Content moved in from outside the frame is synthesised, not blank.
    """
    angle = math.radians(float(rotate))
    tx, ty = (float(v) for v in translate)
    forward = torch.tensor(
        [
            [math.cos(angle), math.sin(angle), tx],
            [-math.sin(angle), math.cos(angle), ty],
            [0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )
    return torch.linalg.inv(forward).to(torch.float32)


def set_transform(G: Generator, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> Generator:
    """A NEW generator equal to ``G`` but rendering its images translated and rotated (``G`` is not modified).

    Only the ``synthesis.input.transform`` buffer changes, so every latent, pivot, direction and tuning of ``G``
    applies unchanged; the result records ``G`` as its origin (``pti.lineage.mark_derived``).
    """

    if not isinstance(G, Generator):
        raise TypeError(f"translation and rotation need a StyleGAN3 generator, got {type(G).__name__}")
    with torch.no_grad():
        result = copy.deepcopy(G)
        result.synthesis.input.transform.copy_(transform_matrix(translate, rotate))
    for attribute in ("source_info",):
        if hasattr(G, attribute):
            setattr(result, attribute, dict(getattr(G, attribute)))
    return mark_derived(result, G)


def make_tiny_generator(seed: int = 0, c_dim: int = 0, config: str = "t", img_resolution: int = 32) -> Generator:
    """A small randomly initialised StyleGAN3 (``config`` ``"t"`` or ``"r"``) for tests and examples (seeded)."""
    if config not in ("t", "r"):
        raise ValueError(f"config must be 't' or 'r', got {config!r}")
    extra = dict(conv_kernel=1, use_radial_filters=True, channel_base=512) if config == "r" else {}
    kwargs = dict(channel_base=256, channel_max=16, num_layers=6, num_critical=2, margin_size=4)
    kwargs.update(extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(
            z_dim=16,
            c_dim=c_dim,
            w_dim=16,
            img_resolution=img_resolution,
            img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            **kwargs,
        )
    return G.eval().requires_grad_(False)


__all__ = [
    "Generator",
    "MappingNetwork",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "check_config",
    "design_lowpass_filter",
    "is_stylegan3_state",
    "make_tiny_generator",
    "modulated_conv2d",
    "set_transform",
    "transform_matrix",
]

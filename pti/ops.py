"""Numeric kernels of StyleGAN2 as pure functions, written in plain PyTorch.

No custom CUDA/C++ extensions: everything here runs wherever PyTorch runs (CPU, CUDA, MPS).
The functions follow the semantics of the StyleGAN2-ADA paper's reference operators:

* ``setup_filter`` / ``upfirdn2d`` -- FIR filtering with zero-insertion upsampling and decimation.
* ``bias_act`` -- bias, activation, gain and clamp in one call.
* ``conv2d_resample`` -- convolution fused with 2x up- or down-sampling.
* ``modulated_conv2d`` -- style modulation and demodulation, as one grouped convolution ("fused") or as
  input scaling around a shared-weight convolution ("unfused"); both give the same result.
* ``filtered_lrelu`` -- StyleGAN3's alias-free activation: upsample, leaky ReLU, low-pass and decimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Activation name -> (function, default gain).
ACTIVATIONS: dict[str, tuple] = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
}


def activation_gain(name: str) -> float:
    """Default gain that keeps the signal's second moment constant through activation ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name][1]


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """Add ``bias`` along ``dim``, apply activation ``act``, scale by ``gain`` and clamp to ``±clamp``."""
    func, default_gain = ACTIVATIONS[act]
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.to(x.dtype).reshape(shape)
    x = func(x)
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that its mean square along ``dim`` is one (StyleGAN's pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(taps: Sequence[float] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Turn 1-D taps into the 2-D (outer product) FIR filter used for resampling, summing to one."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f


def _parse_scaling(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    sx, sy = value
    return int(sx), int(sy)


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Return padding as (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (or crop, for negative padding), FIR-filter, then decimate.

    ``x`` is ``[N, C, H, W]``; ``f`` a 2-D filter ``[fh, fw]``, or 1-D taps ``[k]`` applied separably along both
    axes (StyleGAN3's filters), ``None`` means identity. ``gain`` scales the whole 2-D response, so a 2x upsampling
    that should keep brightness uses ``gain=4``.
    """
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    if f is not None and f.ndim == 1:
        # Separable: each axis in turn (zero insertion, padding, filter, decimation along x, then along y), each
        # carrying the square root of the gain. The same sums as the 2-D form, on far fewer samples.
        taps = (f * math.sqrt(gain)).to(x.dtype).flip([0])
        x = _upfirdn_axis(x, taps, upx, px0, px1, downx, axis=3)
        return _upfirdn_axis(x, taps, upy, py0, py1, downy, axis=2)
    n, c, h, w = x.shape
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    if f is not None:
        # The filter is applied as a true convolution (flipped), matching the reference operator; decimation is
        # the convolution's stride (the same outputs as filtering everything and keeping every down-th sample).
        kernel = (f * gain).to(x.dtype).flip([0, 1])
        kernel = kernel[None, None].expand(c, 1, *kernel.shape)
        return F.conv2d(x, kernel, groups=c, stride=(downy, downx))
    if gain != 1:
        x = x * gain
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def _upfirdn_axis(x: torch.Tensor, taps: torch.Tensor, up: int, pad0: int, pad1: int, down: int, axis: int):
    """One axis (2 = y, 3 = x) of a separable ``upfirdn2d``: ``taps`` already flipped and scaled."""
    if up > 1:
        shape = list(x.shape)
        x = F.pad(x.unsqueeze(axis + 1), [0, up - 1] if axis == 3 else [0, 0, 0, up - 1])
        shape[axis] *= up
        x = x.reshape(shape)
    size = x.shape[axis]
    x = F.pad(x, [max(pad0, 0), max(pad1, 0)] if axis == 3 else [0, 0, max(pad0, 0), max(pad1, 0)])
    x = x.narrow(axis, max(-pad0, 0), size + pad0 + pad1)
    c = x.shape[1]
    kernel = taps[None, None, None, :] if axis == 3 else taps[None, None, :, None]
    stride = (1, down) if axis == 3 else (down, 1)
    return F.conv2d(x, kernel.expand(c, 1, *kernel.shape[2:]), groups=c, stride=stride)


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    """2x (or ``up``x) upsampling with FIR filter ``f``, output exactly ``up`` times larger."""
    fw, fh = _filter_size(f)
    pad = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, gain: float = 1.0) -> torch.Tensor:
    """2x (or ``down``x) downsampling with FIR filter ``f``, output exactly ``down`` times smaller."""
    fw, fh = _filter_size(f)
    pad = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, gain=gain)


def conv2d_resample(
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution (cross-correlation) fused with FIR up- or down-sampling.

    Upsampling uses a stride-2 transposed convolution followed by the FIR filter; downsampling filters first and
    then convolves with stride 2. Other cases fall back to the plain convolution.
    """
    out_channels, in_per_group, kh, kw = weight.shape
    fw, fh = _filter_size(f)
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return F.conv2d(x, weight, groups=groups)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = F.conv2d(x, weight, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return F.conv2d(x, weight, stride=down, groups=groups)
    if up > 1:
        # Transposed convolution wants [in, out/groups, kh, kw] per group.
        if groups == 1:
            w = weight.transpose(0, 1)
        else:
            w = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            w = w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = F.conv_transpose2d(x, w, stride=up, padding=[pyt, pxt], groups=groups)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)
        if down > 1:
            x = downsample2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, weight, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return F.conv2d(x, weight, groups=groups)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution: scale input channels by ``styles``, convolve, demodulate, add noise.

    ``x`` ``[N, I, H, W]``, ``weight`` ``[O, I, kh, kw]``, ``styles`` ``[N, I]``, ``noise`` broadcastable to the
    output. ``fused=True`` builds one weight per sample and runs a grouped convolution; ``fused=False`` scales
    activations around a single shared-weight convolution. ``None`` picks grouped only for a single sample that
    needs no gradient (rendering), shared otherwise — for batches and for every call that is differentiated
    (projection, tuning, training), as NVIDIA's code does in training mode; measured in
    ``benchmarks/bench_networks.py``.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must be [{batch}, {in_channels}], got {list(styles.shape)}")
    if fused is None:
        fused = batch == 1 and not (
            torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or styles.requires_grad)
        )
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs = None
    if demodulate:
        per_sample = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
        dcoefs = (per_sample.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]

    if not fused:
        x = x * styles.reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w, f=resample_filter, up=up, padding=padding, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """StyleGAN3's filtered leaky ReLU in plain PyTorch (what NVIDIA's fused CUDA kernel computes).

    Add ``b`` per channel; upsample ``up``x by zero insertion, pad by ``padding`` (x0, x1, y0, y1; negative crops)
    and filter with ``fu``; leaky ReLU (``slope``) times ``gain``, clamped to ``±clamp``; filter with ``fd`` and
    keep every ``down``-th sample. Filters are 1-D (separable) or 2-D (radial), ``None`` is identity. The output is
    ``(in * up + pad - (len(fu) - 1) - (len(fd) - 1) + down - 1) // down`` samples along each axis.
    """
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects [N, C, H, W], got {list(x.shape)}")
    if b is not None:
        if b.shape != (x.shape[1],):
            raise ValueError(f"bias must be [{x.shape[1]}], got {list(b.shape)}")
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up * up)
    x = F.leaky_relu(x, slope) if slope != 1 else x
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down)

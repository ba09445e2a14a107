"""Image reconstruction metrics for inversion quality: MSE, PSNR, SSIM, MS-SSIM and LPIPS.

Every function takes two batches ``[N, C, H, W]`` in ``[-1, 1]`` (the generator's range) and returns one value
per image, shape ``[N]``. Inputs are first clipped to ``[-1, 1]`` (what saving the image would keep) and the
pixel metrics are computed on the ``[0, 1]`` scale (data range 1), so ``psnr == -10 * log10(mse)``.
SSIM follows Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, no padding: the "valid"
area as in the reference MATLAB code), averaged over channels and pixels. MS-SSIM follows Wang et al. 2003.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MS_SSIM_WEIGHTS", "lpips_distance", "ms_scales", "ms_ssim", "mse", "psnr", "ssim", "summarize"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first


def _as_unit_range(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"{name} must be a float image batch [N, C, H, W] in [-1, 1], got {_describe(x)}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}; resize one to match")
    if a.device != b.device:
        raise ValueError(f"images are on different devices ({a.device}, {b.device})")
    return (a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2


def _describe(x: object) -> str:
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image on the [0, 1] scale. [N]"""
    a, b = _as_unit_range(a, b)
    return (a - b).square().flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, data range 1. Identical images give ``inf`` (not capped). [N]"""
    return -10 * torch.log10(mse(a, b))


def _gaussian_blur_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable 11-tap Gaussian (sigma 1.5) per channel, keeping only the fully covered ("valid") area."""
    coords = torch.arange(SSIM_WINDOW, dtype=x.dtype, device=x.device) - (SSIM_WINDOW - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    taps = (taps / taps.sum()).expand(x.shape[1], 1, SSIM_WINDOW)
    x = F.conv2d(x, taps[..., None], groups=x.shape[1])
    return F.conv2d(x, taps[:, :, None, :], groups=x.shape[1])


def _ssim_terms(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term (the ``cs`` of MS-SSIM), inputs in [0, 1]."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(a.shape)}")
    c1, c2 = 0.01**2, 0.03**2
    blur = _gaussian_blur_valid
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    cs_map = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs_map
    return ssim_map.flatten(1).mean(1), cs_map.flatten(1).mean(1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (1 = identical). Images must be at least 11x11. [N]"""
    return _ssim_terms(*_as_unit_range(a, b))[0]


def ms_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit: each halving must leave at least an 11x11 window (5 need >= 176 px)."""
    side, scales = min(height, width), 0
    while scales < len(MS_SSIM_WEIGHTS) and side >= SSIM_WINDOW:
        scales += 1
        side //= 2
    return scales


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM per image (Wang et al. 2003), 1 = identical. [N]

    Five scales need images of at least 176x176 (11 px left at the coarsest scale). Smaller images (>= 11 px) use
    as many scales as fit, with the first weights renormalised to sum to 1: values stay in the same range but are
    only comparable between images of the same size. Negative per-scale terms are clipped to 0 before the weighted
    geometric mean (as common implementations do) so the result is always defined.
    """
    a, b = _as_unit_range(a, b)
    scales = ms_scales(*a.shape[-2:])
    if scales == 0:
        raise ValueError(f"MS-SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(a.shape)}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=a.dtype, device=a.device)
    weights = weights / weights.sum()
    result = torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
    for scale in range(scales):
        full, cs = _ssim_terms(a, b)
        term = full if scale == scales - 1 else cs
        result = result * term.clamp_min(0) ** weights[scale]
        if scale < scales - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return result


def lpips_distance(a: torch.Tensor, b: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS v0.1 perceptual distance per image (0 = identical; lower is more similar). [N]

    Needs the backbone installed by ``python -m pti fetch-weights`` (else :class:`MissingWeightsError`).
    Differentiable with respect to the images.
    """
    from .perceptual import load_lpips

    _as_unit_range(a, b)  # validation only; LPIPS itself takes [-1, 1]
    model = load_lpips(net, a.device)
    return model(a.clamp(-1, 1), b.clamp(-1, 1)).flatten()


def summarize(a: torch.Tensor, b: torch.Tensor, lpips_net: str | None = "alex") -> dict[str, float]:
    """Batch means of every metric, for benchmarks: keys mse, psnr, ssim, ms_ssim and ``lpips_<net>``.

    ``lpips_net=None`` skips LPIPS (no weights needed).
    """
    with torch.no_grad():
        values = {"mse": mse(a, b), "psnr": psnr(a, b), "ssim": ssim(a, b), "ms_ssim": ms_ssim(a, b)}
        if lpips_net is not None:
            values[f"lpips_{lpips_net}"] = lpips_distance(a, b, lpips_net)
    return {name: value.double().mean().item() for name, value in values.items()}

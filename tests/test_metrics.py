"""Reconstruction metrics: closed-form values, agreement with scikit-image/kornia SSIM, monotonic degradation."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, tensor_digest
from PIL import Image
from skimage.metrics import structural_similarity

from pti.metrics import lpips_distance, ms_scales, ms_ssim, mse, psnr, ssim, summarize
from pti.perceptual import lpips_available

needs_lpips = pytest.mark.skipif(not lpips_available("alex"), reason="run `python -m pti fetch-weights`")


def _smooth_images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Band-limited random images inside [-0.6, 0.6], so moderate noise is never clipped."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return (F.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1) - 0.5) * 1.2


def _photo() -> torch.Tensor:
    path = REPO_ROOT / "tests" / "data" / "lpips" / "ex_ref.png"
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def _noisy(images: torch.Tensor, sigma_unit: float, seed: int = 1) -> torch.Tensor:
    """Gaussian noise with standard deviation ``sigma_unit`` on the [0, 1] scale (2x that in [-1, 1] units)."""
    g = torch.Generator().manual_seed(seed)
    return images + 2 * sigma_unit * torch.randn(images.shape, generator=g)


def test_identical_images():
    a = _smooth_images()
    assert torch.equal(mse(a, a), torch.zeros(2))
    assert torch.isinf(psnr(a, a)).all() and (psnr(a, a) > 0).all()
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    torch.testing.assert_close(ms_ssim(a, a), torch.ones(2))


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_of_known_noise(sigma):
    a = _smooth_images(n=3, size=64)
    values = psnr(_noisy(a, sigma), a)
    assert values.shape == (3,)
    assert torch.allclose(values, torch.full((3,), 20 * math.log10(1 / sigma)), atol=0.5)
    torch.testing.assert_close(values, -10 * torch.log10(mse(_noisy(a, sigma), a)))


def test_ssim_matches_scikit_image_and_kornia():
    a = _smooth_images(n=2, size=48)
    b = _noisy(a, 0.05).clamp(-1, 1)
    ours = ssim(a, b)
    for i in range(2):
        reference = structural_similarity(
            ((a[i] + 1) / 2).numpy(),
            ((b[i] + 1) / 2).numpy(),
            channel_axis=0,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(reference, abs=1e-4)
    kornia_map = kornia.metrics.ssim((a + 1) / 2, (b + 1) / 2, window_size=11, padding="valid")
    torch.testing.assert_close(ours, kornia_map.flatten(1).mean(1), atol=1e-4, rtol=0)


def test_metrics_fall_monotonically_with_noise():
    a = _smooth_images(n=1, size=176)  # the smallest size with 5 MS-SSIM scales
    sigmas = [0.01, 0.04, 0.15]
    ms = [ms_ssim(_noisy(a, s), a).item() for s in sigmas]
    single = [ssim(_noisy(a, s), a).item() for s in sigmas]
    assert all(x > y for x, y in zip(ms, ms[1:])), ms
    assert all(x > y for x, y in zip(single, single[1:])), single
    assert 0 < ms[-1] < ms[0] < 1


def test_ms_ssim_scales_follow_image_size():
    assert [ms_scales(s, s) for s in (10, 11, 22, 44, 88, 175, 176, 1024)] == [0, 1, 2, 3, 4, 4, 5, 5]
    assert ms_scales(300, 44) == 3  # the shorter side decides
    a = _smooth_images(n=2, size=16)  # one scale: MS-SSIM reduces to SSIM
    b = _noisy(a, 0.05)
    torch.testing.assert_close(ms_ssim(a, b), ssim(a, b))
    small = _smooth_images(n=1, size=64)  # 3 scales, renormalised weights: still 1 for identical, < 1 otherwise
    assert 0 < ms_ssim(_noisy(small, 0.05), small).item() < 1


@needs_lpips
def test_lpips_calls_blur_worse_than_noise_that_pixel_metrics_rate_worse():
    ref = _photo()
    blurred = kornia.filters.gaussian_blur2d(ref, (5, 5), (1.25, 1.25))
    noisy = _noisy(ref, 1.2 * mse(blurred, ref).sqrt().item())
    assert mse(noisy, ref) >= mse(blurred, ref)  # by pixels the noisy image is at least as far away ...
    assert lpips_distance(blurred, ref) > 3 * lpips_distance(noisy, ref)  # ... LPIPS strongly disagrees
    # and each degradation grows with its strength
    blur_curve = [
        lpips_distance(kornia.filters.gaussian_blur2d(ref, (9, 9), (s, s)), ref).item() for s in (0.7, 1.5, 3)
    ]
    noise_curve = [lpips_distance(_noisy(ref, s), ref).item() for s in (0.02, 0.05, 0.1)]
    assert blur_curve == sorted(blur_curve) and noise_curve == sorted(noise_curve)
    assert lpips_distance(ref, ref).item() == 0


@needs_lpips
def test_summarize_reports_batch_means_and_leaves_inputs_alone():
    a = _smooth_images(n=2, size=32)
    b = _noisy(a, 0.05)
    before = tensor_digest([a, b])
    summary = summarize(b, a)
    assert set(summary) == {"mse", "psnr", "ssim", "ms_ssim", "lpips_alex"}
    assert summary["psnr"] == pytest.approx(psnr(b, a).mean().item())
    assert summary["lpips_alex"] == pytest.approx(lpips_distance(b, a).mean().item(), rel=1e-5)
    assert all(isinstance(v, float) for v in summary.values())
    assert set(summarize(b, a, lpips_net=None)) == {"mse", "psnr", "ssim", "ms_ssim"}
    assert tensor_digest([a, b]) == before


def test_values_outside_the_image_range_are_clipped_like_a_saved_image():
    a = _smooth_images(n=1, size=16).clamp(0.5, 1)
    assert mse(a.clone().fill_(1.3), a.clone().fill_(1.0)).item() == 0


def test_bad_inputs_are_refused_with_a_reason():
    a = _smooth_images(n=1, size=16)
    with pytest.raises(ValueError, match="shape"):
        mse(a, a[..., :15])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        psnr(a[0], a[0])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ssim((a * 127).to(torch.uint8), a)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a[..., :8, :8], a[..., :8, :8])
    with pytest.raises(ValueError, match="11x11"):
        ms_ssim(a[..., :8, :8], a[..., :8, :8])

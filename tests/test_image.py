"""Photo -> target conversion: crop/resize geometry, alpha and grey handling, round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pti.image import (
    bchw_to_comfy,
    comfy_to_bchw,
    load_image,
    make_comparison,
    prepare_target,
    save_image,
    to_pil,
)


def test_wide_photo_is_centre_cropped_then_area_resized():
    photo = np.zeros((40, 80, 3), np.uint8)
    photo[:, :20] = (255, 0, 0)  # left margin red, right margin green: both outside the centred square
    photo[:, 60:] = (0, 255, 0)
    photo[:, 20:60] = (0, 0, 255)
    target = prepare_target(photo, 8)
    assert target.shape == (1, 3, 8, 8)
    expected = torch.tensor([-1.0, -1.0, 1.0]).view(1, 3, 1, 1).expand_as(target)
    assert torch.allclose(target, expected)


def test_area_resize_averages_exact_blocks():
    image = torch.rand(3, 16, 16)
    target = prepare_target(image, 4)
    blocks = image.view(3, 4, 4, 4, 4).mean(dim=(2, 4))
    assert torch.allclose(target[0], blocks * 2 - 1, atol=1e-6)


def test_small_image_is_enlarged_and_kept_in_range():
    target = prepare_target(torch.rand(3, 10, 10), 32)
    assert target.shape == (1, 3, 32, 32) and target.min() >= -1 and target.max() <= 1


def test_rgba_is_composited_over_white_and_grey_repeated():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent -> white
    assert torch.allclose(prepare_target(rgba, 8), torch.ones(1, 3, 8, 8))
    half = rgba.copy()
    half[..., 3] = 128
    out = prepare_target(half, 8)
    assert torch.allclose(out[0, 0], torch.ones(8, 8))
    assert out[0, 1].mean() == pytest.approx(2 * (127 / 255) - 1, abs=0.01)
    grey = prepare_target(np.full((8, 8), 64, np.uint8), 8)
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 1], grey[0, 2])


def test_uint8_and_float_inputs_agree_and_pil_matches_numpy():
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    from_numpy = prepare_target(array, 16)
    from_tensor = prepare_target(torch.from_numpy(array).permute(2, 0, 1).float() / 255, 16)
    from_pil = prepare_target(Image.fromarray(array), 16)
    assert torch.allclose(from_numpy, from_tensor, atol=1e-6) and torch.allclose(from_numpy, from_pil, atol=1e-6)


def test_png_round_trip_and_loaded_alpha(tmp_path):
    image = torch.rand(1, 3, 12, 12) * 2 - 1
    path = save_image(image, tmp_path / "a.png")
    assert torch.allclose(load_image(path) * 2 - 1, image[0], atol=1 / 255 + 1e-6)
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "clear.png")
    assert torch.equal(load_image(tmp_path / "clear.png"), torch.ones(3, 4, 4))


def test_comfy_round_trip():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    comfy = bchw_to_comfy(images)
    assert comfy.shape == (2, 8, 8, 3) and comfy.min() >= 0 and comfy.max() <= 1
    assert torch.allclose(comfy_to_bchw(comfy), images, atol=1e-6)


def test_comparison_strip_resizes_to_a_common_height():
    strip = make_comparison([torch.zeros(3, 8, 8), torch.zeros(1, 3, 16, 16)], gap=2)
    assert strip.shape == (3, 16, 16 + 2 + 16)
    labelled = make_comparison([torch.zeros(3, 16, 16)] * 2, labels=["a", "b"])
    assert labelled.shape[1] > 16 and to_pil(labelled).size == (labelled.shape[2], labelled.shape[1])


def test_bad_inputs_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="channel axis"):
        prepare_target(torch.rand(7, 9, 9), 8)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "bad.png")

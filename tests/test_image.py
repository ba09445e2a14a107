"""Photo -> target conversion: crop/resize geometry, alpha and grey handling, round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

from pti.image import (
    bchw_to_comfy,
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
    assert torch.allclose(prepare_target(comfy, 8), images, atol=1e-6)


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


def _example_photo_forms(path):
    """The same photo as every form a user may hand over."""
    pil = Image.open(path).convert("RGB")
    array = np.asarray(pil).copy()
    chw = torch.from_numpy(array).permute(2, 0, 1)
    return {
        "path": path,
        "path as str": str(path),
        "PIL image": pil,
        "uint8 array [H, W, C]": array,
        "float array 0..1": array.astype(np.float32) / 255,
        "uint8 tensor [C, H, W]": chw,
        "float tensor 0..1 [C, H, W]": chw.float() / 255,
        "float tensor batch [1, C, H, W]": chw[None].float() / 255,
        "ComfyUI IMAGE [1, H, W, C]": torch.from_numpy(array)[None].float() / 255,
        "load_image": load_image(path),
    }


@pytest.mark.parametrize("name", ["pti_example_photo.jpg", "pti_example_face.png"])
def test_every_form_of_a_photo_gives_the_identical_target(name):
    path = REPO_ROOT / "workflows" / name
    reference = prepare_target(path, 64)
    for form, value in _example_photo_forms(path).items():
        assert torch.equal(prepare_target(value, 64), reference), form
    # The target is the photo itself (centre square, area-resized), not a washed-out copy of it.
    pil = Image.open(path).convert("RGB")
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    expected = np.asarray(pil.crop((left, top, left + side, top + side)).resize((64, 64), Image.BOX), np.float32)
    got = ((reference[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert 10 * np.log10(255**2 / np.mean((got - expected) ** 2)) >= 40


def test_generator_space_images_are_explicit_never_guessed():
    from pti.image import GeneratorImages

    rendered = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(prepare_target(GeneratorImages(rendered), 16), rendered)
    with pytest.raises(ValueError, match="GeneratorImages"):  # a bare [-1, 1] tensor is not silently rescaled
        prepare_target(rendered, 16)
    with pytest.raises(ValueError, match="divide 0..255 floats by 255"):
        prepare_target(torch.rand(3, 16, 16) * 255, 16)


def test_alpha_grey_16_bit_exif_and_huge_photos_match_their_8_bit_rgb_equivalent(tmp_path):
    rgb = np.asarray(Image.open(REPO_ROOT / "workflows" / "pti_example_face.png").convert("RGB")).copy()
    reference = prepare_target(rgb, 64)
    opaque_rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert torch.equal(prepare_target(opaque_rgba, 64), reference)
    sixteen_bit = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # mode I;16
    assert torch.allclose(prepare_target(sixteen_bit, 64), prepare_target(Image.fromarray(rgb[..., 0]), 64), atol=1e-6)
    grey = Image.fromarray(rgb[..., 1])
    assert torch.equal(prepare_target(grey, 64), prepare_target(np.repeat(rgb[..., 1:2], 3, axis=-1), 64))
    rotated = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": undoes the counter-clockwise turn above
    rotated.save(tmp_path / "rotated.png", exif=exif)
    assert torch.equal(prepare_target(tmp_path / "rotated.png", 64), reference)
    huge = np.repeat(np.repeat(rgb, 32, axis=0), 32, axis=1)  # 4096 x 4096
    assert torch.allclose(prepare_target(huge, 128), prepare_target(rgb, 128), atol=1e-6)

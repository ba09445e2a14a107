"""Procedural face renderer: determinism, parameter mapping, and that each attribute changes what it claims to."""

from __future__ import annotations

import pytest
import torch

from pti.synthetic import faces

RES = 64


def neutral(n: int = 1, **overrides: float) -> torch.Tensor:
    """Parameters of a centred, frontal, evenly lit face (0.5 everywhere) with some overridden columns."""
    params = torch.full([n, faces.NUM_PARAMETERS], 0.5)
    for name, value in overrides.items():
        params[:, faces.ATTRIBUTE_NAMES.index(name)] = value
    return params


def sweep(name: str, values: list[float], **fixed: float) -> torch.Tensor:
    params = neutral(len(values), **fixed)
    params[:, faces.ATTRIBUTE_NAMES.index(name)] = torch.tensor(values)
    return faces.render(params, RES)


def luminance(images: torch.Tensor) -> torch.Tensor:
    return (images + 1).div(2).mul(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def test_same_seed_same_images_and_different_seeds_differ():
    a_img, a_attr = faces.sample(6, seed=11)
    b_img, b_attr = faces.sample(6, seed=11)
    c_img, _ = faces.sample(6, seed=12)
    assert torch.equal(a_img, b_img) and torch.equal(a_attr, b_attr)
    assert (a_img - c_img).abs().mean() > 0.05
    assert a_img.shape == (6, 3, RES, RES) and a_attr.shape == (6, faces.NUM_PARAMETERS)
    assert a_img.min() >= -1 and a_img.max() <= 1


def test_render_from_z_is_render_of_the_normal_cdf_and_parameters_are_uniform():
    z = faces.sample_z(20_000, seed=0)
    params = faces.params_from_z(z)
    assert params.min() >= 0 and params.max() <= 1
    quartiles = torch.quantile(params[:, 0], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(quartiles, torch.tensor([0.25, 0.5, 0.75]), atol=0.015)
    assert torch.equal(faces.render_from_z(z[:3]), faces.render(params[:3]))


def test_images_are_shaded_not_piecewise_flat():
    images, _ = faces.sample(8, seed=5)
    distinct = [torch.unique((img * 255).round(), dim=None).numel() for img in images]
    assert min(distinct) > 150  # soft edges and shading give many grey levels per image


def test_smile_raises_mouth_corners_and_shows_teeth():
    frown, neutral_face, smile = sweep("smile", [0.0, 0.5, 1.0])
    mouth_rows, mouth_cols = slice(31, 43), slice(24, 41)
    lum = luminance(torch.stack([frown, neutral_face, smile]))[:, mouth_rows, mouth_cols]
    assert lum[2].max() > lum[1].max() + 0.1  # teeth appear in a broad smile
    change = (smile - frown).abs().sum(0)
    assert change[mouth_rows, mouth_cols].sum() > 0.9 * change.sum()  # nothing outside the mouth moved

    def dark_row(image: torch.Tensor, col: int) -> float:  # row of the darkest pixel (the lip line) in a column
        return float(luminance(image[None])[0, mouth_rows, col].argmin()) + mouth_rows.start

    corner, centre = 27, 32
    # y grows downwards: a smile puts the corners above the centre, a frown below it
    assert dark_row(smile, corner) < dark_row(smile, centre)
    assert dark_row(frown, corner) > dark_row(frown, centre)


def test_wider_mouth_spans_more_columns():
    images = sweep("mouth_width", [0.0, 0.25, 0.5, 0.75, 1.0], glasses=0.0)
    rgb = (images + 1).div(2)[:, :, 30:42, 20:44]  # the mouth band
    redness = rgb[:, 0] - rgb[:, 1]
    lip_columns = (redness - redness.median() > 0.05).any(1).sum(1)  # lips are redder than the skin around them
    assert (lip_columns[1:] > lip_columns[:-1]).all(), lip_columns
    assert lip_columns[-1] >= 2 * lip_columns[0]


def test_pointed_jaw_narrows_the_lower_face_only():
    images = sweep("jaw", [0.0, 0.5, 1.0], hair_length=0.0, glasses=0.0)
    rgb = (images + 1).div(2)
    background = rgb[:, :, 38:39, 0:1]
    face_columns = ((rgb[:, :, 38] - background[:, :, 0]).abs().sum(1) > 0.15).sum(1)  # just below the mouth
    assert (face_columns[1:] < face_columns[:-1]).all(), face_columns
    change = (images[2] - images[0]).abs().sum(0)
    assert change[:30].sum() < 0.05 * change.sum()  # the eyes, hair and forehead stay put


def test_glasses_attribute_records_the_drawn_opacity_and_only_the_eye_band_changes():
    params = neutral(3)
    params[:, faces.ATTRIBUTE_NAMES.index("glasses")] = torch.tensor([0.1, 0.5, 0.9])
    attrs = faces.attributes_from_params(params)[:, faces.ATTRIBUTE_NAMES.index("glasses")]
    assert attrs[0] == 0 and attrs[2] == 1 and 0.3 < attrs[1] < 0.7
    images = faces.render(params, RES)
    change = (images[2] - images[0]).abs().sum(0)
    assert change.sum() > 20
    assert change[16:32].sum() > 0.9 * change.sum()
    half = (images[1] - images[0]).abs().sum()
    assert 0.25 * change.sum() < half < 0.75 * change.sum()


@pytest.mark.parametrize(
    "name, rows, expect",
    [
        ("hair_color", slice(14, 20), "brighter"),
        ("skin_tone", slice(31, 35), "darker"),
        ("background_brightness", slice(0, 4), "brighter"),
    ],
)
def test_attribute_monotonically_changes_its_region(name, rows, expect):
    images = sweep(name, [0.0, 0.25, 0.5, 0.75, 1.0])
    region = luminance(images)[:, rows, 20:44].mean((1, 2))
    steps = region[1:] - region[:-1]
    assert (steps > 0).all() if expect == "brighter" else (steps < 0).all(), region


def test_open_eyes_show_more_white():
    images = sweep("eye_openness", [0.25, 0.5, 0.75, 1.0])
    whitish = (images + 1).div(2).min(1).values[:, 24:33, 20:44] > 0.5  # sclera: bright in every channel
    counts = whitish.sum((1, 2))
    assert (counts[1:] > counts[:-1]).all(), counts


def test_yaw_moves_the_features_sideways():
    images = sweep("yaw", [0.0, 0.25, 0.5, 0.75, 1.0], hair_length=0.0, fringe=0.0, glasses=0.0)
    rgb = (images + 1).div(2)[:, :, 33:41, 16:48]  # the mouth band
    redness = rgb[:, 0] - rgb[:, 1]  # lips are the reddest thing in it
    redness = (redness - redness.median()).clamp(min=0)
    cols = torch.arange(16, 48, dtype=torch.float32)
    centroid = (redness.sum(1) * cols).sum(1) / redness.sum((1, 2))
    assert (centroid[1:] > centroid[:-1]).all(), centroid
    assert centroid[-1] - centroid[0] > 1.5  # pixels


def test_bad_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=f"\\[N, {faces.NUM_PARAMETERS}\\]"):
        faces.render(torch.rand(2, 5))
    with pytest.raises(ValueError, match="resolution"):
        faces.render(neutral(), resolution=8)

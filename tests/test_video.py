"""Video PTI: alignment smoothing measured against the true motion of a synthetic clip, one generator tuned on a
clip, edits pasted back per frame and per chunk, frames without a face, stitching, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_generator, tensor_digest

from pti.align import crop_with_alignment
from pti.directions import Direction
from pti.latent import synthesize
from pti.metrics import psnr
from pti.synthetic import clips
from pti.video import (
    VideoError,
    VideoSettings,
    direction_edit,
    edit_clip,
    invert_clip,
    outside_mask_change,
    seam_gradient_ratio,
    smooth_alignments,
    temporal_flicker,
)

QUICK = VideoSettings(pivot_steps=4, tune_steps=6, target_psnr=0.0)


@pytest.fixture(scope="module")
def clip() -> clips.Clip:
    return clips.make_clip(6, seed=2, crop_size=32, frame_size=(72, 56), kind="tattoo", landmark_noise=0.7)


@pytest.fixture(scope="module")
def generator():
    return make_generator(resolution=32, w_dim=32, seed=1)


class AverageFaceEncoder(torch.nn.Module):
    """A stand-in encoder: the generator's average w, nudged by each image's brightness (skips the w search)."""

    def __init__(self, G: torch.nn.Module):
        super().__init__()
        self.register_buffer("w_avg", G.mapping.w_avg.detach().clone())
        self.num_ws = G.num_ws

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ws = self.w_avg.view(1, 1, -1).expand(len(images), self.num_ws, -1)
        return ws + 0.1 * images.mean((1, 2, 3)).view(-1, 1, 1)


@pytest.fixture(scope="module")
def inverted(generator, clip):
    landmarks = list(clip.landmarks)
    landmarks[3] = None  # a frame where the detector found nothing
    return invert_clip(generator, clip.frames, landmarks, QUICK, encoder=AverageFaceEncoder(generator))


def test_smoothing_follows_the_true_motion_and_removes_landmark_noise():
    """Against the clip's true crop path: the crop's jitter (frame-to-frame change of its error) falls to <= 0.6x
    for the centre and <= 0.35x for the size of the unsmoothed alignment's (STIT's sigmas: 1 frame for the centre,
    3 for the size), and the error itself falls too."""
    clip = clips.make_clip(24, seed=5, frame_size=(144, 112), kind=None, landmark_noise=1.0)
    smoothed, raw = smooth_alignments(list(clip.landmarks), (144, 112), 64)
    raw_centre, raw_size = clips.alignment_jitter(raw, clip.alignments)
    centre, size = clips.alignment_jitter(smoothed, clip.alignments)
    assert raw_centre > 0.5 and raw_size > 0.02, "the noise must be visible before smoothing"
    assert centre <= 0.6 * raw_centre and size <= 0.35 * raw_size, (raw_centre, centre, raw_size, size)
    raw_errors, errors = clips.alignment_errors(raw, clip.alignments), clips.alignment_errors(smoothed, clip.alignments)
    assert errors[0] < 0.8 * raw_errors[0] and errors[1] < 0.5 * raw_errors[1]
    exact, _ = smooth_alignments(list(clip.true_landmarks), (144, 112), 64, 0.0, 0.0)
    assert clips.alignment_errors(exact, clip.alignments) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_frames_without_a_face_stay_out_and_smoothing_bridges_them(clip):
    landmarks = list(clip.true_landmarks)
    landmarks[2] = None
    smoothed, raw = smooth_alignments(landmarks, (72, 56), 32)
    assert smoothed[2] is None and raw[2] is None and all(a is not None for i, a in enumerate(smoothed) if i != 2)


def test_one_generator_tuned_on_the_clip_reproduces_it(generator, clip, inverted):
    assert inverted.face_frames == [0, 1, 2, 4, 5] and inverted.report["frames_without_face"] == [3]
    crops = torch.stack([crop_with_alignment(clip.frames[i], inverted.alignments[i]) for i in inverted.face_frames])
    assert torch.equal(crops, inverted.crops)
    before = psnr(synthesize(generator, inverted.pivots), crops * 2 - 1)
    after = psnr(synthesize(inverted.tuned, inverted.pivots), crops * 2 - 1)
    assert (after > before + 0.5).all(), (before, after)
    assert inverted.tuned is not generator and inverted.tuned.tuning_info["steps"] == QUICK.tune_steps


def test_edit_pastes_back_per_frame_and_chunks_match_the_whole_clip(generator, clip, inverted):
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(0)), dim=0)
    direction = Direction("random", vector)
    edit = direction_edit(direction, 3.0)
    whole, masks, report = edit_clip(inverted, clip.frames, edit)
    assert whole.shape == clip.frames.shape and masks.shape == (6, 56, 72) and report["edited"] == 5
    assert torch.equal(whole[3], clip.frames[3]) and masks[3].max() == 0, "a frame without a face passes through"
    assert outside_mask_change(whole, clip.frames, masks) == 0.0
    assert (whole - clip.frames).abs().amax() > 0.05, "the edit changed the faces"
    first, _, _ = edit_clip(inverted, clip.frames[:4], edit)
    second, _, chunk = edit_clip(inverted, clip.frames[4:], edit, offset=4)
    assert chunk["offset"] == 4  # the same frames in chunks: equal up to float rounding of batch sizes
    torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-5, rtol=0)
    assert temporal_flicker(clip.frames, clip.frames) == 0.0
    assert seam_gradient_ratio(clip.frames, clip.frames, masks) == pytest.approx(1.0)


def test_stitching_tunes_a_working_copy_and_leaves_the_tuned_generator_alone(clip, inverted):
    before = tensor_digest(inverted.tuned.state_dict())
    naive, masks, _ = edit_clip(inverted, clip.frames[:2], None)
    stitched, _, report = edit_clip(
        inverted, clip.frames[:2], None, settings=VideoSettings(stitch_steps=3, stitch_lr=1e-2)
    )
    assert tensor_digest(inverted.tuned.state_dict()) == before
    assert report["stitch_steps"] == 3 and not torch.equal(stitched, naive)
    assert outside_mask_change(stitched, clip.frames[:2], masks) == 0.0


def test_a_clip_of_one_frame_works_like_a_photo(generator, clip):
    single = invert_clip(generator, clip.frames[:1], [clip.landmarks[0]], QUICK, encoder=AverageFaceEncoder(generator))
    out, masks, _ = edit_clip(single, clip.frames[:1])
    assert out.shape == (1, 3, 56, 72) and masks.max() > 0.99


def test_bad_clips_get_one_clear_error(generator, clip, inverted):
    with pytest.raises(VideoError, match="no frames"):
        invert_clip(generator, clip.frames[:0], [], QUICK)
    with pytest.raises(VideoError, match="no face was found in any frame"):
        invert_clip(generator, clip.frames[:2], [None, None], QUICK)
    with pytest.raises(VideoError, match="2 landmark sets for 3 frames"):
        invert_clip(generator, clip.frames[:3], list(clip.landmarks[:2]), QUICK)
    with pytest.raises(VideoError, match="outside the inverted clip of 6 frames"):
        edit_clip(inverted, clip.frames[:3], offset=5)
    with pytest.raises(VideoError, match="inverted at 72x56"):
        edit_clip(inverted, torch.zeros(2, 3, 40, 40))
    with pytest.raises(VideoError, match=r"\[N, 3, H, W\]"):
        edit_clip(inverted, np.zeros((2, 56, 72, 3)))

"""Video Tune / Video Edit driven as ComfyUI drives them, and ``python -m pti video`` on the shipped example clip (a
real face under a moving camera, with audio)."""

from __future__ import annotations

import json

import pytest
import torch
from pack_loader import load_pack, pack_module

from pti import cli
from tools.build_workflows import EXAMPLE_CLIP, WORKFLOW_DIR

pack = load_pack()
NODES = pack.NODE_CLASS_MAPPINGS
av = pytest.importorskip("av", reason="PyAV reads the example clip (pip install av)")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """The first 3 frames of the example clip as a ComfyUI IMAGE batch [3, H, W, 3]."""
    clip, _fps = pack_module("pti.video_io").read_clip(WORKFLOW_DIR / EXAMPLE_CLIP)
    return clip[:3].permute(0, 2, 3, 1).contiguous()


def test_video_tune_and_edit_keep_the_batch_shape_and_work_in_chunks(frames):
    (G,) = NODES["PTI_LoadStyleGAN"]().load("(embedded default)")
    (encoder,) = NODES["PTI_LoadEncoder"]().load("(embedded default model's encoder)")
    with torch.inference_mode():
        inversion, tuned, aligned = NODES["PTI_VideoTune"]().tune(
            G, frames, tune_steps=2, stop_at_psnr=0.0, smooth_center=1.0, smooth_size=3.0, detector="auto", seed=0,
            encoder=encoder,
        )  # fmt: skip
        (direction,) = NODES["PTI_LoadDirection"]().load("smile", "", generator=tuned)
        common = dict(direction=direction, strength=2.0, layer_start=-1, layer_end=-1, stitch_steps=0, feather=0.08)
        images, mask = NODES["PTI_VideoEdit"]().edit(inversion, frames, frame_offset=0, **common)
        (last,), (last_mask,) = NODES["PTI_VideoEdit"]().edit(inversion, frames[2:], frame_offset=2, **common)
    assert aligned.shape == (3, 64, 64, 3) and inversion.report["frames_without_face"] == []
    assert images.shape == frames.shape and mask.shape == frames.shape[:3]
    torch.testing.assert_close(last, images[2], atol=1e-5, rtol=0)
    changed = (images - frames).abs().amax(-1)
    assert changed[mask == 0].max() == 0 and changed.max() > 0.05, "only the masked face changes"
    with pytest.raises(ValueError, match="outside the inverted clip of 3 frames"):
        NODES["PTI_VideoEdit"]().edit(inversion, frames, frame_offset=1, **common)


def test_cli_video_writes_frames_a_video_with_audio_and_a_report(tmp_path, capsys):
    # The first 4 frames with the clip's audio track (a short clip keeps the test fast), through the public writer.
    video_io = pack_module("pti.video_io")
    frames, fps = video_io.read_clip(WORKFLOW_DIR / EXAMPLE_CLIP)
    clip_path = video_io.write_video(frames[:4], tmp_path / "clip.mp4", fps, audio_from=WORKFLOW_DIR / EXAMPLE_CLIP)
    argv = ["video", str(clip_path), "--out", str(tmp_path / "out"), "--direction", "smile", "--strength", "-1.5"]
    assert cli.main([*argv, "--tune-steps", "2"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == 4 and report["frames_without_face"] == [] and report["outside_mask_change"] == 0.0
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == [f"{i:05d}.png" for i in range(4)]
    with av.open(str(tmp_path / "out" / "edited.mp4")) as edited:
        stream = edited.streams.video[0]
        count = sum(1 for _ in edited.decode(stream))
        assert count == 4 and float(stream.average_rate) == 12.0 and (stream.width, stream.height) == (192, 160)
        assert edited.streams.audio, "the source's audio goes into the edited video"
    assert "edited.mp4" in capsys.readouterr().out


def test_cli_video_bad_input_gets_one_clear_error(tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    assert cli.main(["video", str(tmp_path / "broken.mp4"), "--out", str(tmp_path / "o"), "--direction", "smile"]) == 2
    assert "cannot decode broken.mp4" in capsys.readouterr().err
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("RGB", (40, 32)).save(folder / "b.png")
    assert cli.main(["video", str(folder), "--out", str(tmp_path / "o"), "--direction", "smile"]) == 2
    assert "every frame of a clip must have one size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing is written for a clip that cannot be read"

"""Writes ``workflows/pti_example_clip.mp4``: the example clip of workflow 7 and of ``python -m pti video``.

A real face moving through the frame: ``workflows/pti_example_photo.jpg`` (scikit-image's ``astronaut``, NASA, public
domain) seen through a virtual camera that pans, zooms and tilts smoothly, 24 frames of 192x160 at 12 fps, with a
soft two-tone audio track so that audio pass-through can be checked. Needs PyAV (``pip install av``).

    python tools/make_example_clip.py
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402

CLIP = REPO_ROOT / "workflows" / "pti_example_clip.mp4"
PHOTO = REPO_ROOT / "workflows" / "pti_example_photo.jpg"
FRAMES, FPS, SIZE = 24, 12, (192, 160)
AUDIO_RATE = 16000


def camera_path(photo: Image.Image) -> np.ndarray:
    """``FRAMES`` views of ``photo`` through a camera that pans, zooms and tilts along smooth paths."""
    frames = []
    for index in range(FRAMES):
        phase = 2 * np.pi * index / FRAMES
        centre = np.array([250 + 30 * np.sin(phase), 135 + 15 * np.sin(2 * phase)])  # the face is near (250, 120)
        scale = 1.7 * (1 + 0.12 * np.sin(phase + 0.7))  # photo pixels per frame pixel
        angle = np.radians(6 * np.sin(phase + 0.3))
        rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        offset = centre - rotation @ (np.array(SIZE) / 2)
        coefficients = (*rotation[0], offset[0], *rotation[1], offset[1])  # frame pixel -> photo pixel
        view = photo.transform(SIZE, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BICUBIC)
        frames.append(np.asarray(view))
    return np.stack(frames)


def main() -> int:
    import av

    pixels = camera_path(Image.open(PHOTO).convert("RGB"))
    seconds = FRAMES / FPS
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    tone = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    with av.open(str(CLIP), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"crf": "18"}
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        for frame in pixels:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        samples = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
        samples.sample_rate, samples.time_base = AUDIO_RATE, Fraction(1, AUDIO_RATE)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        for chunk in [*resampler.resample(samples), *resampler.resample(None)]:
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())
    print(CLIP, f"{CLIP.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

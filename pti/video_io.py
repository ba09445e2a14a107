"""Reading and writing clips: a folder of frames, or a video file through PyAV (the optional ``video`` extra:
``pip install av``). ComfyUI passes video as IMAGE batches and never needs this module."""

from __future__ import annotations

import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import FILE_MODE
from .video import VideoError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_FPS = 24.0


def _require_av():
    try:
        import av
    except ImportError as exc:
        raise VideoError(
            "reading and writing video files needs PyAV: pip install av (or pass a folder of frames)"
        ) from exc
    return av


def read_frames_dir(folder: Path) -> torch.Tensor:
    """Every image in ``folder`` (sorted by name) as ``[N, 3, H, W]`` in 0..1; all must have one size."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise VideoError(f"{folder} holds no frames ({', '.join(FRAME_SUFFIXES)})")
    frames = []
    for path in paths:
        with Image.open(path) as picture:
            frames.append(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)
        if frames[-1].shape != frames[0].shape:
            raise VideoError(
                f"{path.name} is {frames[-1].shape[1]}x{frames[-1].shape[0]} but {paths[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}: every frame of a clip must have one size"
            )
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def read_clip(source: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """``(frames [N, 3, H, W] in 0..1, fps)`` of a video file or a folder of frames (fps 24 for a folder)."""
    source = Path(source)
    if source.is_dir():
        return read_frames_dir(source), DEFAULT_FPS
    if not source.is_file():
        raise VideoError(f"{source} is neither a video file nor a folder of frames")
    av = _require_av()
    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or DEFAULT_FPS)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise VideoError(
            f"cannot decode {source.name} as a video ({exc}); convert it, or pass a folder of frames"
        ) from exc
    if not frames:
        raise VideoError(f"{source.name} has no video frames")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255, fps


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_frames(frames: torch.Tensor, folder: str | os.PathLike) -> list[Path]:
    """PNG frames ``00000.png ...`` into ``folder``, all or nothing: written to a hidden folder beside it, then
    renamed into place (an existing ``folder`` is replaced only then)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for index, pixels in enumerate(_to_uint8(frames)):
            Image.fromarray(pixels).save(temporary / f"{index:05d}.png")
            os.chmod(temporary / f"{index:05d}.png", FILE_MODE)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return sorted(folder.glob("*.png"))


def write_video(
    frames: torch.Tensor, path: str | os.PathLike, fps: float, audio_from: str | os.PathLike | None = None
) -> Path:
    """An H.264 (else MPEG-4) mp4 of ``frames`` at ``fps``, with the audio of ``audio_from`` (re-encoded as AAC)
    when that file has any; written beside ``path`` and renamed into place."""
    av = _require_av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.mp4", dir=path.parent)
    os.close(fd)
    try:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        with av.open(name, "w", format="mp4") as out:
            video = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            video.height, video.width = frames.shape[-2] // 2 * 2, frames.shape[-1] // 2 * 2
            video.pix_fmt = "yuv420p"
            _copy_audio(av, audio_from, out)
            for pixels in _to_uint8(frames[..., : video.height, : video.width]):
                out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            out.mux(video.encode())
        os.chmod(name, FILE_MODE)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)
    return path


def _copy_audio(av, source: str | os.PathLike | None, out) -> None:
    """Re-encode the first audio stream of ``source`` (if any) into ``out`` as AAC."""
    if source is None or Path(source).is_dir():
        return
    with av.open(str(source)) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        audio = out.add_stream("aac", rate=stream.rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        for frame in container.decode(stream):
            for resampled in resampler.resample(frame):
                out.mux(audio.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(audio.encode(resampled))
        out.mux(audio.encode())

"""Image I/O and conversions between photos, generator outputs and ComfyUI tensors.

One convention at the public boundary: **a photo is a photo**, in whatever form it arrives: a file path, a PIL image,
a numpy array or torch tensor (8-bit, 16-bit or float 0..1; ``[H, W]``, ``[H, W, C]``, ``[C, H, W]`` or a batch
``[N, C, H, W]``), or a ComfyUI IMAGE ``[B, H, W, C]`` float 0..1. Every form of the same photo gives the identical
target. Images that are already in the generator's space (``[N, 3, H, W]`` float in ``[-1, 1]``, e.g. G's own
output) are never guessed: wrap them in :class:`GeneratorImages`. A float tensor outside 0..1 is refused with a
message that says so, instead of being silently read one way or the other.

How a photo becomes a target (``prepare_target``), stated once here because every entry point uses it:

1. Transparency is composited over **white** (an RGBA cut-out of a face becomes a face on a white background,
   rather than on whatever colour the transparent pixels happen to hold). Grey images are repeated to RGB.
2. The largest **centred square** is cropped (no padding, no distortion of the aspect ratio). Crop or align the
   face yourself beforehand if it is not in the middle of the photo.
3. The square is resized to the model's resolution: **area averaging** when shrinking (antialiased, exact for
   integer factors) and bicubic (antialiased) when enlarging.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

_CHANNEL_COUNTS = (1, 2, 3, 4)  # grey, grey+alpha, RGB, RGBA
_UNIT_TOLERANCE = 1e-3  # float photos may overshoot 0..1 by rounding, not by more


@dataclass(frozen=True)
class GeneratorImages:
    """Images already in the generator's space: ``pixels`` ``[N, 3, H, W]`` (or ``[3, H, W]``) float in ``[-1, 1]``.

    The explicit way to hand generator renderings (or targets made by :func:`prepare_target`) to ``project`` and
    ``pivotal_tune``; a bare tensor is always read as a photo.
    """

    pixels: torch.Tensor

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (3, 4) or pixels.shape[-3] != 3:
            shape = list(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"GeneratorImages holds [N, 3, H, W] or [3, H, W] tensors in [-1, 1], got {shape}")


ImageLike = torch.Tensor | np.ndarray | Image.Image | str | Path | GeneratorImages


def load_image(path: str | Path) -> torch.Tensor:
    """Read a photo as a ``[3, H, W]`` float tensor in 0..1 (EXIF rotation applied, alpha over white, grey → RGB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return decode_image(path.read_bytes(), str(path))


def decode_image(data: bytes, name: str = "the image") -> torch.Tensor:
    """``load_image`` for a photo's bytes (e.g. sent to another machine); ``name`` is what errors call it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            return _pil_to_tensor(img)
    except UnidentifiedImageError:
        raise ValueError(
            f"cannot read {name} as an image (not an image format Pillow knows); use a PNG, JPEG or WebP file"
        ) from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read {name} as an image ({exc}); use a PNG, JPEG or WebP file") from exc


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> ``[3, H, W]`` float 0..1, transparency composited over white."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float32) / (65535.0 if img.mode.startswith("I;16") else 255.0)
        return torch.from_numpy(np.clip(array, 0, 1)).unsqueeze(0).repeat(3, 1, 1)
    array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_nchw(image: ImageLike) -> tuple[torch.Tensor, float]:
    """Any supported image value -> ``([N, C, H, W]`` in its own dtype, the value of full intensity``)``.

    C is 1..4 (alpha still present). Integer pixels are not converted here, and numpy arrays are wrapped rather than
    copied, so a huge 8-bit photo can be cropped and shrunk before any full-size float copy exists.
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            return _pil_to_tensor(image).unsqueeze(0), 1.0  # palette, 16-bit, CMYK...: PIL converts them
        image = np.array(image)  # 8-bit pixels, alpha composited later like any RGBA array
    if isinstance(image, np.ndarray):
        is_integer = np.issubdtype(image.dtype, np.integer)
        scale = float(np.iinfo(image.dtype).max) if is_integer else 1.0
        array = np.ascontiguousarray(image)
        if array.dtype not in (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64):
            array = array.astype(np.float32)  # uint16/uint32 etc. have no torch counterpart to wrap
        with warnings.catch_warnings():  # a read-only array is fine: its pixels are only ever read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(array)
        channels_last = True  # numpy images are conventionally [H, W, C]
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu")
        scale = 1.0 if tensor.is_floating_point() else 255.0  # integer images are 8-bit
        channels_last = False  # torch images are conventionally [C, H, W]...
        if tensor.ndim == 4 and tensor.shape[1] not in _CHANNEL_COUNTS and tensor.shape[-1] in _CHANNEL_COUNTS:
            tensor = tensor.permute(0, 3, 1, 2)  # ...except a ComfyUI IMAGE batch [B, H, W, C]
    else:
        raise TypeError(f"expected a torch tensor, numpy array or PIL image, got {type(image).__name__}")

    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        first, last = tensor.shape[0] in _CHANNEL_COUNTS, tensor.shape[-1] in _CHANNEL_COUNTS
        if last and (channels_last or not first):
            tensor = tensor.permute(2, 0, 1)
        elif not first:
            raise ValueError(f"cannot tell the channel axis of an image shaped {list(tensor.shape)}; use [C, H, W]")
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim != 4 or tensor.shape[1] not in _CHANNEL_COUNTS:
        shape = list(tensor.shape)
        raise ValueError(f"expected an image [C, H, W], [H, W, C], [H, W] or a batch [N, C, H, W]; got {shape}")
    return tensor, scale


def _unit_rgb(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    """Raw ``[N, C, h, w]`` pixels -> ``[N, 3, h, w]`` float32 in 0..1 with alpha composited over white."""
    unit = pixels.float() if scale == 1.0 else pixels.float() / scale
    return _flatten_channels(unit)


def _area_shrink(square: torch.Tensor, scale: float, resolution: int) -> torch.Tensor:
    """Area-average raw square pixels ``[N, C, S, S]`` down to ``[N, 3, R, R]`` float 0..1, one band of rows at a
    time: the same result as ``F.interpolate(mode="area")`` on the whole float image (area windows are rectangles,
    so averaging rows first and columns second is exact) without ever holding a full-size float copy. The band and
    the row means live in buffers allocated once, so the loop cannot fragment the heap into a full-size footprint."""
    count, channels, side = square.shape[0], square.shape[1], square.shape[-1]
    row_means = torch.empty([resolution, count, 3, side])
    band = torch.empty([count, channels, side // resolution + 2, side])
    for i in range(resolution):
        top, bottom = (i * side) // resolution, -(-((i + 1) * side) // resolution)
        rows = band[:, :, : bottom - top]
        rows.copy_(square[:, :, top:bottom])
        if scale != 1.0:
            rows.div_(scale)
        torch.mean(_flatten_channels(rows), dim=2, out=row_means[i])
    return F.adaptive_avg_pool2d(row_means.permute(1, 2, 0, 3), (resolution, resolution))


def _flatten_channels(nchw: torch.Tensor) -> torch.Tensor:
    """Composite alpha over white and repeat grey, giving ``[N, 3, H, W]``."""
    channels = nchw.shape[1]
    if channels in (2, 4):
        colour, alpha = nchw[:, :-1], nchw[:, -1:].clamp(0, 1)
        nchw = colour * alpha + (1 - alpha)
    if nchw.shape[1] == 1:
        nchw = nchw.expand(-1, 3, -1, -1)
    return nchw


def _check_unit_range(nchw: torch.Tensor, scale: float) -> None:
    """Refuse float pixels that are not 0..1: they are generator-space images or 0..255 floats, never photos."""
    if scale != 1.0 or not nchw.is_floating_point() or nchw.numel() == 0:
        return
    if not torch.isfinite(nchw).all():
        raise ValueError("the image contains NaN or infinite values; fix the image that feeds the inversion")
    low, high = float(nchw.min()), float(nchw.max())
    if low < -_UNIT_TOLERANCE:
        raise ValueError(
            f"the photo has float pixels down to {low:.3f}: photos are read as 0..1. If this is a generator-space "
            "image in [-1, 1], pass pti.image.GeneratorImages(tensor); otherwise scale it to 0..1"
        )
    if high > 1 + _UNIT_TOLERANCE:
        raise ValueError(
            f"the photo has float pixels up to {high:.3f}: photos are read as 0..1 floats or 8-bit integers; "
            "divide 0..255 floats by 255 (or pass a uint8 array)"
        )


def prepare_target(image: ImageLike | list, resolution: int) -> torch.Tensor:
    """A photo (any size/aspect; RGB, RGBA or grey) -> ``[N, 3, R, R]`` in ``[-1, 1]`` (N = 1 for a single image).

    Accepts every form listed in the module docstring, a :class:`GeneratorImages` (resized like a photo only when
    its size differs) or a list mixing them. Centre-crops to a square and resizes to ``resolution`` (see the module
    docstring).
    """
    if resolution < 4:
        raise ValueError(f"resolution must be at least 4, got {resolution}")
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("no images given")
        return torch.cat([prepare_target(item, resolution) for item in image])
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, GeneratorImages):
        pixels = image.pixels.detach().to("cpu", torch.float32)
        pixels = pixels.unsqueeze(0) if pixels.ndim == 3 else pixels
        if pixels.shape[-2:] == (resolution, resolution):
            return pixels.clone()
        image = ((pixels + 1) / 2).clamp(0, 1)
    nchw, scale = _to_nchw(image)
    _check_unit_range(nchw, scale)
    height, width = nchw.shape[-2:]
    if min(height, width) < 1:
        raise ValueError(f"the image is empty ({height}x{width})")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = nchw[..., top : top + side, left : left + side]
    if side > resolution:
        square = _area_shrink(square, scale, resolution)
    else:
        square = _unit_rgb(square, scale)
        if side < resolution:
            square = F.interpolate(square, size=(resolution, resolution), mode="bicubic", antialias=True)
    return (square.clamp(0, 1) * 2 - 1).contiguous()


def photo_pixels(image: ImageLike) -> torch.Tensor:
    """A photo in any accepted form -> ``[N, 3, H, W]`` float 0..1 at its own size (alpha over white, grey to RGB).

    The full-size counterpart of :func:`prepare_target`, for code that needs the whole photo (alignment, paste-back).
    """
    if isinstance(image, (str, Path)):
        image = load_image(image)
    nchw, scale = _to_nchw(image)
    _check_unit_range(nchw, scale)
    return _unit_rgb(nchw, scale).clamp(0, 1).contiguous()


def as_targets(images: ImageLike | list, resolution: int, device: torch.device | str) -> torch.Tensor:
    """Photos (or :class:`GeneratorImages`) -> finite ``[N, 3, R, R]`` float32 targets in ``[-1, 1]`` on ``device``."""
    batch = prepare_target(images, resolution)
    if not torch.isfinite(batch).all():
        raise ValueError("the image contains NaN or infinite values; fix the image that feeds the inversion")
    return batch.to(device)


def _as_chw_minus1_1(img: torch.Tensor) -> torch.Tensor:
    img = img.detach()
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] or [1, 3, H, W] in [-1, 1], got {list(img.shape)}")
    return img.to("cpu", torch.float32)


def to_unit(img: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> 0..1 (clamped), same shape, on the CPU; used for previews."""
    return ((img.detach().to("cpu", torch.float32) + 1) / 2).clamp(0, 1)


def to_pil(img: torch.Tensor) -> Image.Image:
    """A ``[3, H, W]`` (or ``[1, 3, H, W]``) image in ``[-1, 1]`` -> 8-bit RGB PIL image."""
    unit = to_unit(_as_chw_minus1_1(img)).expand(3, -1, -1)
    array = (unit * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


def save_image(img: torch.Tensor, path: str | Path) -> Path:
    """Write an image in ``[-1, 1]`` to ``path`` (format from the extension; PNG recommended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(img).save(path)
    return path


def bchw_to_comfy(img: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in ``[-1, 1]`` -> ComfyUI IMAGE ``[B, H, W, 3]`` float 0..1 on the CPU."""
    if img.ndim == 3:
        img = img.unsqueeze(0)
    if img.ndim != 4:
        raise ValueError(f"expected images [B, 3, H, W], got {list(img.shape)}")
    return to_unit(img).permute(0, 2, 3, 1).contiguous()


def make_comparison(
    images: list[torch.Tensor], labels: list[str] | None = None, height: int | None = None, gap: int = 4
) -> torch.Tensor:
    """Side-by-side strip of images in ``[-1, 1]`` -> ``[3, H', W']`` in ``[-1, 1]`` (white gaps, optional labels).

    Every image is resized (bicubic, antialiased) to ``height`` (default: the tallest input). Labels are drawn in a
    white band under each image.
    """
    if not images:
        raise ValueError("make_comparison needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    tiles = [_as_chw_minus1_1(img).expand(3, -1, -1) for img in images]
    height = height or max(t.shape[-2] for t in tiles)
    resized = []
    for tile in tiles:
        h, w = tile.shape[-2:]
        if h != height:
            size = (height, max(1, round(w * height / h)))
            tile = F.interpolate(tile[None], size=size, mode="bicubic", antialias=True)[0].clamp(-1, 1)
        resized.append(tile)
    white = torch.ones(3, height, gap)
    strip = torch.cat([part for tile in resized for part in (tile, white)][:-1], dim=-1)
    if not labels:
        return strip
    band = 14
    canvas = to_pil(torch.cat([strip, torch.ones(3, band, strip.shape[-1])], dim=-2))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, label in zip(resized, labels):
        draw.text((x + 2, height + 1), label, fill=(0, 0, 0))
        x += tile.shape[-1] + gap
    array = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 127.5 - 1)
    return array.permute(2, 0, 1).contiguous()


def image_grid(images: torch.Tensor, columns: int = 0, fill: float = 1.0) -> torch.Tensor:
    """Tile ``images`` ``[N, C, H, W]`` row by row into one ``[C, rows*H, columns*W]`` image.

    ``columns`` 0 makes the grid about square; cells after the last image are ``fill`` (1 is white both for 0..1
    images and for images in ``[-1, 1]``).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"image_grid needs a non-empty batch [N, C, H, W], got {list(images.shape)}")
    count, channels, height, width = images.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = -(-count // columns)
    canvas = images.new_full((channels, rows * height, columns * width), fill)
    for index, image in enumerate(images):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[:, top : top + height, left : left + width] = image
    return canvas


def render_sweep_grid(
    G: torch.nn.Module,
    ws: torch.Tensor,
    directions: list,
    strengths: tuple[float, ...] | list[float] = (-2.0, 0.0, 2.0),
    noise_mode: str = "const",
) -> torch.Tensor:
    """Edits of ``ws[0]`` rendered by ``G`` as a grid ``[C, rows*H, cols*W]`` in ``[-1, 1]``: one row per
    direction (``pti.directions.Direction``), one column per strength."""
    from .edit import strength_sweep

    device = next(G.parameters()).device
    with torch.no_grad():
        images = [
            G.synthesis(strength_sweep(ws[:1], direction, strengths).to(device), noise_mode=noise_mode).float().cpu()
            for direction in directions
        ]
    return image_grid(torch.cat(images), columns=len(strengths))

"""Procedural face renderer: the labelled synthetic domain the embedded default generator is trained on.

Every image is a pure function of a parameter vector ``params`` in ``[0, 1]^P`` (one column per name in
``ATTRIBUTE_NAMES``). Latents map to parameters through the normal CDF, so ``z ~ N(0, I)`` gives uniformly
distributed parameters and ``render_from_z(z)`` is the exact, deterministic target the default generator learns to
reproduce from the same ``z``. Shapes are soft signed-distance fields passed through a sigmoid and lit by a
Lambert term on ellipsoid normals, so edges are anti-aliased and surfaces are shaded rather than flat.

Everything is vectorised over the batch in plain PyTorch; images come out ``[N, 3, R, R]`` in ``[-1, 1]`` like a
generator's output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..ops import normalize_2nd_moment

if TYPE_CHECKING:
    from .details import Detail

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "skin_tone",  # light -> dark
    "face_width",  # narrow -> wide
    "jaw",  # round -> narrow, pointed chin
    "hair_color",  # black -> brown -> auburn -> blonde
    "hair_length",  # cropped -> below the shoulders
    "fringe",  # high hairline -> low fringe over the forehead
    "eye_openness",  # closed -> wide open
    "iris_color",  # brown -> green -> blue
    "smile",  # frown -> neutral -> broad smile showing teeth
    "mouth_width",  # narrow -> wide
    "glasses",  # visibility of the glasses (0 = none, 1 = fully drawn)
    "yaw",  # head turned to the viewer's left -> right
    "roll",  # head tilted counter-clockwise -> clockwise
    "head_x",  # head position, left -> right
    "head_y",  # head position, up -> down
    "head_size",  # small -> large
    "light_direction",  # light from the left -> from the right
    "light_intensity",  # flat, soft light -> strong, contrasty light
    "background_hue",  # red -> yellow -> green -> blue -> violet (no wrap-around)
    "background_brightness",  # dark -> light
    "shirt_color",  # hue of the shirt
)
NUM_PARAMETERS = len(ATTRIBUTE_NAMES)
_INDEX = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
RENDER_CHUNK = 32  # faces composited at once: small enough that every layer stays in cache (~1.3x faster than 512)

_HAIR_PALETTE = ((0.07, 0.06, 0.06), (0.30, 0.19, 0.11), (0.55, 0.28, 0.13), (0.80, 0.62, 0.35), (0.93, 0.83, 0.58))
_SKIN_PALETTE = ((0.98, 0.84, 0.73), (0.87, 0.67, 0.52), (0.62, 0.42, 0.28), (0.36, 0.22, 0.14))
_IRIS_PALETTE = ((0.30, 0.17, 0.08), (0.32, 0.45, 0.22), (0.28, 0.48, 0.72))


def params_from_z(z: torch.Tensor) -> torch.Tensor:
    """Map latents ``[N, P]`` (standard normal) to renderer parameters in ``[0, 1]`` through the normal CDF.

    Each latent is first scaled to unit second moment, exactly as StyleGAN's mapping network normalises its input,
    so ``z`` and ``c·z`` render the same face: the generator never sees ``|z|``, and a target that depended on it
    could only be learnt as a blur. The normalised coordinates are still close to N(0, 1) (their quartiles differ
    by < 0.01 for P = 21), so the parameters stay close to uniform.
    """
    _check_columns(z, "z")
    return 0.5 * (1.0 + torch.erf(normalize_2nd_moment(z.float()) / math.sqrt(2.0)))


def attributes_from_params(params: torch.Tensor) -> torch.Tensor:
    """The recorded attribute values ``[N, P]`` of a parameter batch: the parameters themselves, except ``glasses``
    which records the drawn opacity (parameters below 0.4 draw none, above 0.6 draw fully opaque frames)."""
    _check_columns(params, "params")
    attributes = params.float().clone()
    attributes[:, _INDEX["glasses"]] = _glasses_opacity(params[:, _INDEX["glasses"]].float())
    return attributes


def sample_z(n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` latents ``[n, P]`` from a seeded generator (the same seed always gives the same latents)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn([n, NUM_PARAMETERS], generator=generator).to(device)


def sample(n: int, seed: int, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded renders: ``(images [n, 3, R, R] in [-1, 1], attributes [n, P])``."""
    z = sample_z(n, seed)
    params = params_from_z(z)
    return render(params, resolution), attributes_from_params(params)


def render_from_z(z: torch.Tensor, resolution: int = 64) -> torch.Tensor:
    """Render latents ``[N, P]``: the exact target the default generator reproduces from the same ``z``."""
    return render(params_from_z(z), resolution)


def render(params: torch.Tensor, resolution: int = 64, detail: Detail | None = None) -> torch.Tensor:
    """Render parameters ``[N, P]`` in ``[0, 1]`` to images ``[N, 3, R, R]`` in ``[-1, 1]`` (differentiable).

    ``detail`` paints identity detail the default generator never saw (``pti.synthetic.details``) on every face,
    in the head's own coordinates, so it moves, turns and hides with the head as the other features do.
    """
    _check_columns(params, "params")
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    chunks = range(0, params.shape[0], RENDER_CHUNK)
    images = [
        _render_chunk(params[i : i + RENDER_CHUNK], resolution, detail and detail.rows(i, RENDER_CHUNK)) for i in chunks
    ]
    return torch.cat(images) if len(images) != 1 else images[0]


def _render_chunk(params: torch.Tensor, resolution: int, detail: Detail | None) -> torch.Tensor:
    p = {name: params[:, i].float().clamp(0, 1).view(-1, 1, 1, 1) for i, name in enumerate(ATTRIBUTE_NAMES)}
    return _Scene(p, resolution, params.device, detail).draw() * 2.0 - 1.0


def _check_columns(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != NUM_PARAMETERS:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} must be a tensor of shape [N, {NUM_PARAMETERS}] (one column per attribute), got {shape}"
        )


def _glasses_opacity(g: torch.Tensor) -> torch.Tensor:
    t = ((g - 0.4) / 0.2).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _palette(stops: tuple[tuple[float, float, float], ...], t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour ramp: ``t [N,1,1,1]`` in [0,1] -> colour ``[N,3,1,1]``."""
    table = torch.tensor(stops, device=t.device)
    pos = t.flatten() * (len(stops) - 1)
    lo = pos.floor().clamp(max=len(stops) - 2).long()
    frac = (pos - lo).unsqueeze(1)
    colour = table[lo] * (1 - frac) + table[lo + 1] * frac
    return colour.view(-1, 3, 1, 1)


def _hsv(h: torch.Tensor, s: float, v: torch.Tensor | float) -> torch.Tensor:
    """HSV -> RGB for ``[N,1,1,1]`` hue in [0,1]; returns ``[N,3,1,1]``."""
    k = torch.tensor([5.0, 3.0, 1.0], device=h.device).view(1, 3, 1, 1)
    k = (k + h * 6.0) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0, 1)


def _ellipse_sdf(x: torch.Tensor, y: torch.Tensor, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (exact on circles, good enough for soft edges)."""
    ax, ay = x / rx, y / ry
    k0 = torch.sqrt(ax * ax + ay * ay + 1e-12)
    bx, by = ax / rx, ay / ry
    k1 = torch.sqrt(bx * bx + by * by + 1e-12)
    return k0 * (k0 - 1.0) / k1


def _box_sdf(x: torch.Tensor, y: torch.Tensor, hx, hy, corner) -> torch.Tensor:
    """Signed distance to a rounded rectangle of half-sizes ``hx, hy`` and corner radius ``corner``."""
    qx = x.abs() - hx + corner
    qy = y.abs() - hy + corner
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2 + 1e-10)
    return outside + torch.maximum(qx, qy).clamp(max=0) - corner


class _Scene:
    """One batch of faces being composited back to front (background, shoulders, hair, head, features)."""

    def __init__(self, p: dict[str, torch.Tensor], resolution: int, device: torch.device, detail: Detail | None):
        self.p = p
        self.detail = detail
        self.pixel = 2.0 / resolution
        self.soft = 0.55 * self.pixel
        axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) * self.pixel - 1.0
        self.v, self.u = torch.meshgrid(axis, axis, indexing="ij")  # image coordinates, y down
        self.u = self.u.view(1, 1, resolution, resolution)
        self.v = self.v.view(1, 1, resolution, resolution)

        size = 0.86 + 0.28 * p["head_size"]
        self.rx = size * (0.34 + 0.12 * p["face_width"])
        self.ry = size * 0.47
        self.cx = (p["head_x"] - 0.5) * 0.30
        self.cy = -0.10 + (p["head_y"] - 0.5) * 0.22
        self.yaw = (p["yaw"] - 0.5) * 2.0
        self.smile = (p["smile"] - 0.5) * 2.0  # frown -1 ... broad smile +1
        angle = (p["roll"] - 0.5) * 0.5
        cos, sin = torch.cos(angle), torch.sin(angle)
        dx, dy = self.u - self.cx, self.v - self.cy
        self.x = cos * dx + sin * dy  # head-local coordinates (rotated by roll)
        self.y = -sin * dx + cos * dy

        light_x = (p["light_direction"] - 0.5) * 1.8
        norm = torch.sqrt(light_x**2 + 0.35**2 + 0.75**2)
        self.light = (light_x / norm, -0.35 / norm, 0.75 / norm)
        self.ambient = 0.62 - 0.32 * p["light_intensity"]
        self.diffuse = 0.42 + 0.55 * p["light_intensity"]

        self.skin = _palette(_SKIN_PALETTE, p["skin_tone"])
        self.hair = _palette(_HAIR_PALETTE, p["hair_color"])

    def alpha(self, sdf: torch.Tensor, softness: float = 1.0) -> torch.Tensor:
        return torch.sigmoid(-sdf / (self.soft * softness))

    def lambert(self, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
        """Shading factor of a surface with unit normal (nx, ny, sqrt(1 - nx² - ny²)) under the scene light."""
        nz = torch.sqrt((1.0 - nx**2 - ny**2).clamp(min=0.0) + 1e-6)
        lx, ly, lz = self.light
        return self.ambient + self.diffuse * (nx * lx + ny * ly + nz * lz).clamp(min=0.0)

    def face_half_width(self, side: torch.Tensor) -> torch.Tensor:
        """Half-width of the face per side (+1 right, -1 left): the side turned away looks narrower."""
        return self.rx * (1.0 - 0.16 * self.yaw * side)

    def draw(self) -> torch.Tensor:
        img = self.background()
        img = self.shoulders(img)
        img = self.hair_back(img)
        img = self.neck(img)
        img = self.ears(img)
        img = self.face(img)
        if self.detail is not None:
            img = self.detail.draw(self, img)
        img = self.hair_front(img)
        img = self.eyes(img)
        img = self.nose(img)
        img = self.mouth(img)
        img = self.glasses(img)
        return img.clamp(0.0, 1.0)

    @staticmethod
    def over(img: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return torch.lerp(img, colour.expand_as(img) if colour.shape != img.shape else colour, alpha)

    def background(self) -> torch.Tensor:
        p = self.p
        base = _hsv(p["background_hue"] * 0.8, 0.40, 0.25 + 0.65 * p["background_brightness"])
        lx = self.light[0]
        gradient = 1.0 + 0.18 * lx * self.u - 0.08 * self.v
        vignette = 1.0 - 0.22 * (self.u**2 + self.v**2) / 2.0
        return base * gradient * vignette

    def shoulders(self, img: torch.Tensor) -> torch.Tensor:
        colour = _hsv(self.p["shirt_color"], 0.55, 0.62)
        x, y = self.u - self.cx * 0.6, self.v - 1.22
        rx, ry = 0.95, 0.50
        sdf = _ellipse_sdf(x, y, rx, ry)
        shade = self.lambert((x / rx).clamp(-1, 1) * 0.8, (y / ry).clamp(-1, 1) * 0.8)
        return self.over(img, colour * shade, self.alpha(sdf))

    def hair_back(self, img: torch.Tensor) -> torch.Tensor:
        length = self.p["hair_length"]
        top = _ellipse_sdf(self.x, self.y + 0.02, self.rx * 1.20, self.ry * 1.10)
        bottom_y = self.ry * (0.05 + 1.55 * length)
        half_height = (bottom_y + 0.02) / 2
        body = _box_sdf(self.x, self.y - (bottom_y - 0.02) / 2, self.rx * (1.16 + 0.18 * length), half_height, 0.10)
        sdf = torch.minimum(top, body)
        visible = self.alpha(sdf) * (0.25 + 0.75 * (length * 4).clamp(max=1.0))
        colour = self.hair * self.hair_texture() * 0.8 * self.lambert(self.x / (self.rx * 1.6), self.y * 0.0)
        return self.over(img, colour, visible)

    def hair_texture(self) -> torch.Tensor:
        strands = torch.sin(self.x * 55.0 + 6.0 * torch.sin(self.y * 7.0)) * torch.sin(self.x * 23.0 - self.y * 5.0)
        return 1.0 + 0.10 * strands

    def neck(self, img: torch.Tensor) -> torch.Tensor:
        x, y = self.u - self.cx, self.v - (self.cy + self.ry * 0.95)
        sdf = _box_sdf(x, y, self.rx * 0.36, 0.32, 0.06)
        shade = 0.55 * self.lambert((x / (self.rx * 0.6)).clamp(-1, 1) * 0.6, torch.zeros_like(y))
        return self.over(img, self.skin * shade, self.alpha(sdf))

    def ears(self, img: torch.Tensor) -> torch.Tensor:
        for side in (-1.0, 1.0):
            visible = (1.0 - 0.9 * self.yaw * side).clamp(0.0, 1.0)
            centre_x = side * self.face_half_width(side) * 0.97
            x, y = self.x - centre_x, self.y + self.ry * 0.02
            sdf = _ellipse_sdf(x, y, self.rx * 0.15 * visible + 1e-3, self.ry * 0.19)
            img = self.over(img, self.skin * 0.85 * self.lambert(x * 0 + side * 0.5, y * 0), self.alpha(sdf) * visible)
        return img

    def face(self, img: torch.Tensor) -> torch.Tensor:
        side = torch.sign(self.x)
        half_width = self.face_half_width(side)
        lower = (self.y / self.ry).clamp(0.0, 1.0)
        jaw = self.p["jaw"]
        narrowing = 1.0 - (0.05 + 0.60 * jaw) * lower**1.5  # round chin -> narrow, pointed chin
        rx = half_width * narrowing
        ry = self.ry * (1.0 + 0.20 * jaw * (self.y > 0))  # a pointed chin is also a longer one
        nx, ny = (self.x / rx).clamp(-1, 1), (self.y / ry).clamp(-1, 1)
        sdf = _ellipse_sdf(self.x, self.y, rx, ry)
        self.face_alpha = self.alpha(sdf)
        shade = self.lambert(nx * 0.9 - 0.25 * self.yaw, ny * 0.8)
        self.face_shade = shade
        raised = self.smile.clamp(min=0.0)  # a smile lifts and flushes the cheeks
        cheek_y = self.ry * (0.25 - 0.10 * raised)
        cheeks = torch.zeros_like(self.x)
        for s in (-1.0, 1.0):
            cheeks = cheeks + torch.exp(
                -(((self.x - self.feature_x(0.4) - s * self.rx * 0.5) ** 2) + (self.y - cheek_y) ** 2)
                / (2 * (self.rx * 0.18) ** 2)
            )
        blush = torch.tensor([0.95, 0.45, 0.42], device=img.device).view(1, 3, 1, 1)
        colour = self.skin * shade
        colour = colour + (blush * shade - colour) * (0.15 + 0.30 * raised) * cheeks
        return self.over(img, colour, self.alpha(sdf))

    def feature_x(self, depth: float) -> torch.Tensor:
        """Horizontal shift of a facial feature under yaw; ``depth`` says how far it stands out of the face."""
        return self.yaw * self.rx * depth

    def hair_front(self, img: torch.Tensor) -> torch.Tensor:
        fringe = self.p["fringe"]
        cap = _ellipse_sdf(
            self.x, self.y + self.ry * 0.03, self.face_half_width(torch.sign(self.x)) * 1.08, self.ry * 1.06
        )
        t = self.x / self.rx
        hairline = -self.ry * (0.70 - 0.42 * fringe) + self.ry * (0.22 - 0.12 * fringe) * t**2
        sdf = torch.maximum(cap, self.y - hairline)
        shade = self.lambert((self.x / (self.rx * 1.2)).clamp(-1, 1), ((self.y / self.ry).clamp(-1, 0) * 0.9))
        colour = self.hair * self.hair_texture() * shade
        return self.over(img, colour, self.alpha(sdf, 1.3))

    def eyes(self, img: torch.Tensor) -> torch.Tensor:
        p = self.p
        openness = 0.06 + 0.94 * p["eye_openness"]
        iris = _palette(_IRIS_PALETTE, p["iris_color"])
        white = torch.tensor([0.95, 0.94, 0.92], device=img.device).view(1, 3, 1, 1)
        dark = torch.tensor([0.10, 0.07, 0.06], device=img.device).view(1, 3, 1, 1)
        brow_colour = self.hair * 0.75
        for side in (-1.0, 1.0):
            width = self.rx * 0.23 * (1.0 - 0.28 * self.yaw * side)
            height = self.rx * 0.15 * openness
            cx = side * self.rx * 0.42 * (1.0 - 0.16 * self.yaw * side) + self.feature_x(0.28)
            x, y = self.x - cx, self.y + self.ry * 0.04
            outline = _ellipse_sdf(x, y, width * 1.1, height + self.pixel * 0.8)
            img = self.over(img, dark, self.alpha(outline) * 0.9)
            sclera = self.alpha(_ellipse_sdf(x, y, width, height))
            img = self.over(img, white * (0.8 + 0.2 * self.ambient), sclera)
            gaze = self.yaw * width * 0.25
            iris_alpha = self.alpha(_ellipse_sdf(x - gaze, y, width * 0.45, width * 0.45)) * sclera
            img = self.over(img, iris, iris_alpha)
            pupil = self.alpha(_ellipse_sdf(x - gaze, y, width * 0.2, width * 0.2)) * sclera
            img = self.over(img, dark, pupil)
            brow_y = -height - self.rx * 0.13 - 0.03 * p["eye_openness"]
            t = (x / (width * 1.35)).clamp(-1.5, 1.5)
            brow = torch.maximum(
                (y - brow_y - 0.03 * t**2 * self.rx / 0.4).abs() - self.rx * 0.035, x.abs() - width * 1.3
            )
            img = self.over(img, brow_colour, self.alpha(brow, 1.2))
        return img

    def nose(self, img: torch.Tensor) -> torch.Tensor:
        x, y = self.x - self.feature_x(0.42), self.y - self.ry * 0.24
        nostrils = _ellipse_sdf(x, y, self.rx * 0.17, self.ry * 0.05)
        img = self.over(img, self.skin * 0.55, self.alpha(nostrils, 2.0) * 0.55)
        ridge_side = -torch.sign(self.light[0] + 1e-3)
        ridge = _box_sdf(
            x - ridge_side * self.rx * 0.07, self.y - self.ry * 0.08, self.rx * 0.025, self.ry * 0.16, 0.02
        )
        return self.over(img, self.skin * 0.6, self.alpha(ridge, 2.5) * 0.35 * self.p["light_intensity"])

    def mouth(self, img: torch.Tensor) -> torch.Tensor:
        p = self.p
        half_width = self.rx * (0.20 + 0.40 * p["mouth_width"]) * (1.0 - 0.15 * self.yaw * torch.sign(self.x))
        x, y = self.x - self.feature_x(0.32), self.y - self.ry * 0.50
        t = (x / half_width).clamp(-1.2, 1.2)
        curve = self.smile * self.ry * 0.32 * ((1.0 - t**2) - 0.6)  # corners up (smile) or down (frown)
        open_amount = self.smile.clamp(min=0.0)
        lip = self.ry * (0.035 + 0.025 * p["mouth_width"])  # wide mouths have fuller lips
        thickness = (lip + self.ry * 0.12 * open_amount) * torch.sqrt((1.0 - t**2).clamp(min=0.0)) + self.pixel * 0.4
        centre = y - curve - thickness * 0.3 * open_amount
        lips_sdf = torch.maximum(centre.abs() - thickness, x.abs() - half_width)
        lips = torch.tensor([0.66, 0.20, 0.22], device=img.device).view(1, 3, 1, 1)
        lip_colour = (self.skin * 0.35 + lips * 0.65) * self.lambert(t * 0.3, centre * 0)
        img = self.over(img, lip_colour, self.alpha(lips_sdf))
        inner_sdf = torch.maximum(
            centre.abs() - thickness * 0.55 * open_amount - self.pixel * 0.3, x.abs() - half_width * 0.92
        )
        inner = torch.tensor([0.22, 0.05, 0.05], device=img.device).view(1, 3, 1, 1)
        img = self.over(img, inner, self.alpha(inner_sdf))
        teeth = torch.tensor([0.93, 0.91, 0.86], device=img.device).view(1, 3, 1, 1)
        teeth_sdf = torch.maximum(
            (centre + thickness * 0.15).abs() - thickness * 0.28 * open_amount, x.abs() - half_width * 0.7
        )
        return self.over(img, teeth, self.alpha(teeth_sdf) * (open_amount * 2.5 - 0.5).clamp(0, 1))

    def glasses(self, img: torch.Tensor) -> torch.Tensor:
        opacity = _glasses_opacity(self.p["glasses"])
        frame = torch.tensor([0.08, 0.08, 0.10], device=img.device).view(1, 3, 1, 1)
        tint = torch.tensor([0.70, 0.82, 0.92], device=img.device).view(1, 3, 1, 1)
        y = self.y + self.ry * 0.03
        rims = None
        lenses = None
        inner_edges = []
        for side in (-1.0, 1.0):
            width = self.rx * 0.29 * (1.0 - 0.28 * self.yaw * side)
            cx = side * self.rx * 0.42 * (1.0 - 0.16 * self.yaw * side) + self.feature_x(0.36)
            box = _box_sdf(self.x - cx, y, width, self.rx * 0.21, self.rx * 0.08)
            rim = box.abs() - self.rx * 0.028
            rims = rim if rims is None else torch.minimum(rims, rim)
            lenses = box if lenses is None else torch.minimum(lenses, box)
            inner_edges.append(cx - side * width)
        bridge_x = (inner_edges[0] + inner_edges[1]) / 2
        bridge_half = (inner_edges[1] - inner_edges[0]).abs() / 2 + self.pixel
        bridge = _box_sdf(self.x - bridge_x, y + self.rx * 0.06, bridge_half, self.rx * 0.025, 0.005)
        img = self.over(img, tint, self.alpha(lenses) * 0.22 * opacity)
        return self.over(img, frame, self.alpha(torch.minimum(rims, bridge)) * opacity)

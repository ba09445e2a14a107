"""Identity detail the default generator never saw: face paint, freckles and a tattoo, painted by the renderer.

The embedded model learnt ``faces.render_from_z`` and nothing else, so a face rendered with a ``Detail`` is a
photo it cannot draw: inverting it needs pivotal tuning, and editing it has a true answer — the renderer's same
face, with the same detail, and one attribute changed. Details are laid out per face from a seed, in the head's own
coordinates (scaled by the face's size, shifted by yaw like the other features, rotated by roll), drawn on the skin
under the hair, eyes, mouth and glasses, and lit by the scene's light: they move, turn and hide with the head.

Used by ``benchmarks/bench_edit_truth.py`` and its test; the core never imports this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DETAIL_KINDS: tuple[str, ...] = ("face_paint", "tattoo", "freckles")

_PAINT_COLOURS = ((0.12, 0.32, 0.92), (0.96, 0.96, 0.96), (0.86, 0.10, 0.12), (0.10, 0.68, 0.30))
_FRECKLES = 90  # dots per face
_LAYOUT_SIZE = {"face_paint": 5, "freckles": 3 * _FRECKLES, "tattoo": 4}


@dataclass(frozen=True)
class Detail:
    """One kind of detail and each face's random layout (``layout [N, K]`` in ``[0, 1]``, one row per face)."""

    kind: str
    layout: torch.Tensor

    @classmethod
    def sample(cls, kind: str, count: int, seed: int) -> Detail:
        """Seeded layouts for ``count`` faces (the same seed always gives the same detail)."""
        if kind not in DETAIL_KINDS:
            raise ValueError(f"unknown detail kind {kind!r}; choose one of {', '.join(DETAIL_KINDS)}")
        generator = torch.Generator().manual_seed(int(seed))
        return cls(kind, torch.rand(count, _LAYOUT_SIZE[kind], generator=generator))

    def rows(self, start: int, count: int) -> Detail:
        """The layouts of faces ``start .. start + count`` (the renderer draws in chunks)."""
        return Detail(self.kind, self.layout[start : start + count])

    def draw(self, scene, img: torch.Tensor) -> torch.Tensor:
        """Paint this detail on ``img`` (``[N, 3, R, R]`` in 0..1) with the scene's head geometry and light."""
        layout = self.layout.to(img.device).view(self.layout.shape[0], -1, 1, 1)
        if layout.shape[0] != img.shape[0]:
            raise ValueError(f"the detail has {layout.shape[0]} layouts for {img.shape[0]} faces")
        # Head-local coordinates in units of the face's half-width / half-height, moving with yaw like a cheek.
        x = (scene.x - scene.feature_x(0.30)) / scene.rx
        y = scene.y / scene.ry
        colour, alpha = getattr(self, f"_{self.kind}")(scene, x, y, layout)
        return torch.lerp(img, colour.expand_as(img), alpha * scene.face_alpha)

    @staticmethod
    def _face_paint(scene, x, y, layout):
        """One half of the face painted in a bright colour, with bands of it running across the other cheek."""
        side = torch.where(layout[:, 0:1] < 0.5, -1.0, 1.0)
        palette = torch.tensor(_PAINT_COLOURS, device=x.device)
        colour = palette[(layout[:, 1, 0, 0] * len(_PAINT_COLOURS)).long().clamp(max=len(_PAINT_COLOURS) - 1)]
        edge = (layout[:, 2:3] - 0.5) * 0.3  # where the painted half ends, with a slant
        half = (edge + 0.25 * y - x) * side  # < 0 on the painted side
        angle = (layout[:, 3:4] - 0.5) * 0.8
        v = -(x + side * 0.5) * torch.sin(angle) + (y - 0.15) * torch.cos(angle)
        bands = ((v / 0.26) % 1.0 - 0.5).abs() * 0.26 - 0.07  # distance to the nearest band
        stripes = torch.maximum(bands, torch.maximum((x + side * 0.45).abs() - 0.35, v.abs() - 0.45))
        sdf = torch.minimum(half, stripes) * scene.rx
        return colour.view(-1, 3, 1, 1) * scene.face_shade, scene.alpha(sdf) * 0.9

    @staticmethod
    def _freckles(scene, x, y, layout):
        """Dense dark freckles and moles over the forehead, nose and cheeks."""
        dots_x = (layout[:, 0:_FRECKLES] - 0.5) * 1.7  # [N, F, 1, 1]
        dots_y = -0.55 + layout[:, _FRECKLES : 2 * _FRECKLES] * 1.15
        radius = 0.05 + 0.06 * layout[:, 2 * _FRECKLES :] ** 2
        distance = torch.sqrt((x - dots_x) ** 2 + ((y - dots_y) * scene.ry / scene.rx) ** 2) - radius
        sdf = distance.amin(dim=1, keepdim=True) * scene.rx
        colour = torch.tensor([0.30, 0.15, 0.08], device=x.device).view(1, 3, 1, 1)
        return colour * scene.face_shade, scene.alpha(sdf) * 0.9

    @staticmethod
    def _tattoo(scene, x, y, layout):
        """A large five-pointed star in dark ink over one cheek and temple, and an ink ring around the other eye."""
        side = torch.where(layout[:, 0:1] < 0.5, -1.0, 1.0)
        cx, cy = side * (0.42 + 0.1 * layout[:, 1:2]), 0.30 + 0.1 * layout[:, 2:3]
        dx, dy = x - cx, (y - cy) * scene.ry / scene.rx
        theta = torch.atan2(dy, dx) + layout[:, 3:4] * 2 * math.pi / 5
        radius = 0.34 * (1.0 + 0.40 * torch.cos(5 * theta))
        star = torch.sqrt(dx**2 + dy**2) - radius
        ring = (torch.sqrt((x + side * 0.42) ** 2 + ((y + 0.06) * scene.ry / scene.rx) ** 2) - 0.27).abs() - 0.06
        colour = torch.tensor([0.06, 0.16, 0.22], device=x.device).view(1, 3, 1, 1)
        return colour * scene.face_shade.clamp(max=1.0), scene.alpha(torch.minimum(star, ring) * scene.rx) * 0.9

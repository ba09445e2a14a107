"""Photos and manifest reading shared by the invert-many tests (local and Ray backends)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pti.many_jobs import MANIFEST_FILE

STEPS = {"steps_pivot": 2, "steps_tune": 2}
PHOTOS = ("p0.png", "p1.png", "p2.png", "p3.png")
BROKEN = "unreadable.png"  # sorts after the photos


def write_photos(folder: Path, names=PHOTOS, broken: bool = True) -> Path:
    """Distinct noise photos (40 px, seeded by name), plus a file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        pixels = (np.random.default_rng(seed).random((40, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
    if broken:
        (folder / BROKEN).write_bytes(b"this is not an image")
    return folder


def manifest_rows(out: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in (out / MANIFEST_FILE).read_text().splitlines()]
    return lines[0], lines[1:]

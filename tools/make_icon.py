"""Writes the pack's registry icon: four faces the embedded generator makes, 2 x 2, on a 400 px square.

``python tools/make_icon.py [--seeds 3 11 24 40] [--out docs/images/icon.png]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import pti  # noqa: E402
from pti.image import to_pil  # noqa: E402

SIDE = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs=4, default=[3, 11, 24, 40])
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "images" / "icon.png"))
    args = parser.parse_args()
    G = pti.load_generator()
    z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(s)) for s in args.seeds])
    with torch.no_grad():
        images = G(z, None, truncation_psi=0.7, noise_mode="const")
    icon = Image.new("RGB", (SIDE, SIDE))
    for index, image in enumerate(images):
        tile = to_pil(image).resize((SIDE // 2, SIDE // 2), Image.Resampling.LANCZOS)
        icon.paste(tile, ((index % 2) * SIDE // 2, (index // 2) * SIDE // 2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    icon.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()

"""Writes ``pti/ffhq/directions.safetensors``: the FFHQ StyleGAN2 edit directions the pack ships.

The InterFaceGAN boundaries age, smile and rotation (shipped as ``pose``) from the official PTI repository
(danielroich/PTI, MIT License; ``pti/ffhq/LICENSE``), read with the pack's safe loader from a folder holding
``age.pt``, ``smile.pt`` and ``rotation.pt`` (the project's ``../shared/directions``), renormalised to unit length.

    python tools/import_ffhq_directions.py [--source ../shared/directions]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: pti/ is importable from the repository root
    sys.path.insert(0, str(REPO_ROOT))

from pti.directions import FFHQ_DIRECTIONS_PATH, Direction, load_direction, save_directions  # noqa: E402

# shipped name -> (file in the source folder, what it does)
FILES = {
    "age": ("age.pt", "InterFaceGAN age boundary (FFHQ StyleGAN2 W, 512-d)"),
    "smile": ("smile.pt", "InterFaceGAN smile boundary (FFHQ StyleGAN2 W, 512-d)"),
    "pose": ("rotation.pt", "InterFaceGAN yaw (head rotation) boundary (FFHQ StyleGAN2 W, 512-d)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO_ROOT.parent / "shared" / "directions")
    parser.add_argument("--out", type=Path, default=FFHQ_DIRECTIONS_PATH)
    args = parser.parse_args(argv)
    directions = []
    for name, (file_name, description) in FILES.items():
        vector = load_direction(args.source / file_name).vector
        meta = {"method": "interfacegan", "model": "ffhq-stylegan2", "source": f"danielroich/PTI {file_name}"}
        directions.append(Direction(name, vector / vector.norm(), None, {**meta, "description": description}))
    print(save_directions(directions, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

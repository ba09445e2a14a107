"""Writes the README's opening picture: the main job on the example photo (as the CLI runs it: from the shipped
encoder), then two edits decoded by G'.

``python tools/readme_picture.py [--photo workflows/pti_example_face.png] [--out docs/images/main_job.png]``

Columns: the photo at model resolution | G(pivot) | G'(pivot) | G'(pivot + 3·glasses) | G'(pivot + 3·yaw), with the
PSNR of the first three against the photo printed (the README caption quotes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import pti  # noqa: E402
from pti.image import make_comparison, save_image  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.metrics import psnr, ssim  # noqa: E402
from pti.pipeline import invert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(REPO_ROOT / "workflows" / "pti_example_face.png"))
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "images" / "main_job.png"))
    args = parser.parse_args()

    G = pti.load_generator()
    result = invert(G, args.photo, init=pti.load_encoder(None, "cpu"))  # the CLI's default start: the shipped encoder
    directions = pti.default_directions()
    edits = [
        synthesize(result.tuned, pti.apply_direction(result.pivot, directions[name], 3.0))
        for name in ("glasses", "yaw")
    ]
    picture = make_comparison(
        [result.target, result.pivot_image, result.tuned_image, *edits],
        labels=["photo", "pivot G(w)", "tuned G'(w)", "G' glasses +3", "G' yaw +3"],
        height=160,
    )
    save_image(picture, args.out)
    for label, image in (("pivot", result.pivot_image), ("tuned", result.tuned_image)):
        print(f"{label}: PSNR {float(psnr(image, result.target)):.2f} dB, SSIM {float(ssim(image, result.target)):.3f}")
    print(args.out)


if __name__ == "__main__":
    main()

"""Writes the template-browser thumbnails (``workflows/<name>.jpg``) from what the workflows really made.

Run the real-ComfyUI integration test with ``PTI_INTEGRATION_OUTPUTS=<folder>`` (it copies each workflow's saved
images there as ``<workflow>__<file>.png``), then ``python tools/workflow_thumbnails.py <folder>``. Each thumbnail
shows the photo that went in and the picture that came out, large enough to read at card size (512 x 288, 16:9).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools import build_workflows  # noqa: E402

WORKFLOW_DIR = build_workflows.WORKFLOW_DIR
SIZE = (512, 288)
MARGIN, LABEL = 8, 18
# Workflow -> the photo it starts from (None: pure generation).
INPUTS = {
    build_workflows.INVERT_AND_RECONSTRUCT: "pti_example_face.png",
    build_workflows.INVERT_AND_SWEEP: "pti_example_face.png",
    build_workflows.GENERATE_AND_EDIT: None,
    build_workflows.ALIGN_EDIT_PASTE_BACK: "pti_example_photo.jpg",
    build_workflows.ENCODER_WARM_START: "pti_example_face.png",
    build_workflows.TURN_AND_MOVE_STYLEGAN3: None,
    build_workflows.EDIT_FACE_IN_VIDEO: "",  # a frame of the clip: the integration test saves it beside the result
    build_workflows.EDIT_LIVE: "pti_example_face.png",
}
# Workflows that need a GPU and a download: a description card instead of an output (until one is run on a GPU).
DESCRIBED = {
    name: INPUTS[name.removesuffix(build_workflows.FFHQ.title_suffix)] for name in build_workflows.FFHQ_VARIANTS
}


def _fit(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    scale = min(box[0] / image.width, box[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def thumbnail(photo: Image.Image | None, result: Image.Image) -> Image.Image:
    """``photo -> result`` on a white card; the result gets the larger share of the width."""
    card = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(card)
    height = SIZE[1] - 2 * MARGIN - LABEL
    panels = [("photo", photo, 0.3), ("result", result, 0.7)] if photo is not None else [("result", result, 1.0)]
    x = MARGIN
    for label, image, share in panels:
        width = round((SIZE[0] - MARGIN * (len(panels) + 1)) * share)
        fitted = _fit(image.convert("RGB"), (width, height))
        card.paste(fitted, (x + (width - fitted.width) // 2, MARGIN + (height - fitted.height) // 2))
        draw.text((x, SIZE[1] - MARGIN - LABEL + 4), label, fill=(40, 40, 40))
        x += width + MARGIN
    return card


def description_card(photo: Image.Image, lines: list[str]) -> Image.Image:
    """The photo a workflow starts from and what it will do, for a workflow whose output was not made here."""
    card = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(card)
    fitted = _fit(photo.convert("RGB"), (round(SIZE[0] * 0.4), SIZE[1] - 2 * MARGIN))
    card.paste(fitted, (MARGIN, (SIZE[1] - fitted.height) // 2))
    x, y = MARGIN * 3 + fitted.width, SIZE[1] // 2 - 11 * len(lines)
    for index, line in enumerate(lines):
        draw.text((x, y + 22 * index), line, fill=(20, 20, 20) if index == 0 else (70, 70, 70))
    return card


def write_description_cards() -> None:
    item = build_workflows.FFHQ_1024
    for name, photo_name in DESCRIBED.items():
        lines = [
            f"{item.dataset} {item.resolution} px (NVIDIA StyleGAN2-ADA)",
            f"downloads ~{item.approx_mb} MB on the first run",
            "official PTI settings: meant for a GPU",
            "shipped FFHQ directions: age, pose, smile",
            "(not run here: a description, not an output)",
        ]
        path = WORKFLOW_DIR / f"{name}.jpg"
        description_card(Image.open(WORKFLOW_DIR / photo_name), lines).save(path, quality=90)
        print(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path, help="the folder PTI_INTEGRATION_OUTPUTS pointed at")
    args = parser.parse_args(argv)
    write_description_cards()
    for name, photo_name in INPUTS.items():
        results = sorted(p for p in args.outputs.glob(f"{name}__*.png") if not p.stem.endswith("__source"))
        if not results:
            print(f"no output of {name} in {args.outputs}", file=sys.stderr)
            return 1
        if photo_name == "":
            photo = Image.open(args.outputs / f"{name}__source.png")
        else:
            photo = Image.open(WORKFLOW_DIR / photo_name) if photo_name else None
        path = WORKFLOW_DIR / f"{name}.jpg"
        thumbnail(photo, Image.open(results[-1])).save(path, quality=90)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

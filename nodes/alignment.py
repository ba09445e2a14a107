"""Alignment nodes: FFHQ-align the face in a photo before inversion, and paste the edited face back afterwards."""

from __future__ import annotations

import torch

from ..pti.align import DETECTORS, align_face, paste_back
from ..pti.image import photo_pixels
from . import common

# One ``pti.align.Alignment`` per input photo, in batch order.
ALIGNMENT = "PTI_ALIGNMENT"
FALLBACK_OPTIONS = {"error": None, "center crop": "center"}


def _photos_chw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` -> ``[B, 3, H, W]`` float 0..1 on the CPU, converted by the core."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] == 0:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a non-empty IMAGE batch [B, H, W, C], got {shape}")
    return photo_pixels(image)


def _to_comfy(images_chw: torch.Tensor) -> torch.Tensor:
    return images_chw.clamp(0, 1).movedim(1, -1).contiguous()


def _landmark_lines(text: str, count: int) -> list[str | None]:
    """One landmark string per photo: empty = detect; one line = every photo; else one line per photo."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return [None] * count
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(f"got {len(lines)} lines of landmarks for {count} photos: give one line, or one per photo")
    return lines


class AlignFace:
    DESCRIPTION = (
        "Crops and rotates the face in each photo the way the model's training faces (FFHQ) were aligned, from five "
        "landmarks (eyes, nose, mouth corners) found by a detector or typed in. Feed the aligned image to Project "
        "Pivot and keep the alignment for Paste Back."
    )
    SEARCH_ALIASES = ["face detection", "crop face", "ffhq align", "landmarks", "mtcnn"]
    CATEGORY = f"{common.CATEGORY}/alignment"
    RETURN_TYPES = ("IMAGE", ALIGNMENT)
    RETURN_NAMES = ("aligned", "alignment")
    OUTPUT_TOOLTIPS = (
        "The aligned face crops, at the generator's resolution (or 'size').",
        "How each crop sits in its photo: connect to Paste Back (PTI).",
    )
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": common.link_input("IMAGE", "Photo(s) with a face; each is aligned on its own."),
                "size": common.int_input(
                    1024, 16, 4096, "Crop size in pixels when no generator is connected (else its resolution)."
                ),
                "detector": common.combo_input(
                    DETECTORS,
                    "Landmark detector: auto = MTCNN (its 2 MB weights are downloaded into models/pti_weights on "
                    "first use); dlib and kornia need optional installs. Ignored when landmarks are given.",
                    default="auto",
                ),
                "fallback": common.combo_input(
                    list(FALLBACK_OPTIONS),
                    "When no face (or no detector) is found: stop with an error, or use the centred square.",
                    default="error",
                ),
                "landmarks": common.string_input(
                    "",
                    "Optional hand-placed landmarks 'x1,y1,...,x5,y5' in photo pixels: eye left, eye right, nose "
                    "tip, mouth left, mouth right (as seen). One line for all photos or one line per photo.",
                    multiline=True,
                ),
            },
            "optional": {
                "generator": common.link_input(
                    common.GENERATOR, "Optional: align to this generator's resolution instead of 'size'."
                ),
                "face_index": common.int_input(
                    0, 0, 63, "Which face when a photo has several: 0 = the largest, 1 = the next largest, ..."
                ),
            },
        }

    def align(self, image, size, detector, fallback, landmarks, generator=None, face_index=0):
        photos = _photos_chw(image)
        resolution = generator.img_resolution if generator is not None else size
        crops, alignments = [], []
        store = common.weight_store()
        for photo, points in zip(photos, _landmark_lines(landmarks, len(photos))):
            common.check_interrupted()
            crop, alignment = align_face(
                photo, resolution, points, detector, FALLBACK_OPTIONS[fallback], face_index, store
            )
            crops.append(crop)
            alignments.append(alignment)
        return (_to_comfy(torch.stack(crops)), alignments)


class PasteBack:
    DESCRIPTION = (
        "Warps edited face crops back into the original photo with a soft face mask. Every photo pixel outside the "
        "mask stays exactly as it was. A batch of edits (e.g. a strength sweep) gives one photo per edit."
    )
    SEARCH_ALIASES = ["uncrop", "composite face", "blend back", "face swap back"]
    CATEGORY = f"{common.CATEGORY}/alignment"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "The photo(s) with the edited face pasted in, one per edited crop, at the photo's size.",
        "Where the edited face was blended in (1 = edited face, 0 = untouched photo), one per output image.",
    )
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": common.link_input("IMAGE", "The photo(s) that went into Align Face (PTI)."),
                "edited": common.link_input(
                    "IMAGE", "Edited face crops; several per photo are allowed (rows of photo i come together)."
                ),
                "alignment": common.link_input(ALIGNMENT, "The alignment output of Align Face (PTI)."),
                "feather": common.float_input(
                    0.08, 0.01, 0.3, 0.01, "Width of the mask's soft edge, as a fraction of the crop size."
                ),
            }
        }

    def paste(self, original, edited, alignment, feather):
        photos, crops = _photos_chw(original), _photos_chw(edited)
        if len(alignment) != len(photos):
            raise ValueError(f"got {len(photos)} photos but {len(alignment)} alignments: connect the same photos")
        if len(crops) % len(photos):
            raise ValueError(
                f"{len(crops)} edited crops cannot be shared among {len(photos)} photos: give a multiple of the count"
            )
        per_photo = len(crops) // len(photos)
        images, masks = [], []
        for index, (photo, placement) in enumerate(zip(photos, alignment)):
            common.check_interrupted()
            pasted, mask = paste_back(photo, crops[index * per_photo : (index + 1) * per_photo], placement, feather)
            images.append(pasted)
            masks.append(mask.expand(per_photo, -1, -1))
        return (_to_comfy(torch.cat(images)), torch.cat(masks).contiguous())


NODE_CLASS_MAPPINGS = {
    "PTI_AlignFace": AlignFace,
    "PTI_PasteBack": PasteBack,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_AlignFace": "Align Face (PTI)",
    "PTI_PasteBack": "Paste Back (PTI)",
}

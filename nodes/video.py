"""Video nodes: tune one generator on a whole clip (an IMAGE batch, e.g. from Get Video Components), then edit and
paste back any run of its frames. Frame rate and audio do not pass through these nodes: wire them from Get Video
Components straight into Create Video."""

from __future__ import annotations

import logging

import torch

from ..pti.align import DETECTORS
from ..pti.image import bchw_to_comfy
from ..pti.memory import optimisation_bytes
from ..pti.tune import TUNING_PRESETS
from ..pti.video import ClipInversion, VideoSettings, direction_edit, edit_clip, invert_clip
from . import common, managed_models
from .editing import layer_range
from .encoder import ENCODER

log = logging.getLogger("pti.nodes")

VIDEO_INVERSION = "PTI_VIDEO_INVERSION"
FAST = VideoSettings()


def comfy_to_frames(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[N, H, W, C]`` 0..1 -> frames ``[N, 3, H, W]`` on the CPU (RGB; alpha dropped)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected an IMAGE batch of frames [N, H, W, 3], got {shape}; connect the clip's images")
    if images.shape[0] == 0:
        raise ValueError("the clip has no frames: connect a video's images")
    return images[..., :3].detach().to("cpu", torch.float32).permute(0, 3, 1, 2).contiguous()


class VideoTune:
    DESCRIPTION = (
        "Video PTI, step 1: aligns the face in every frame (crop smoothed over time), finds a pivot per frame and "
        "tunes ONE generator on all of them, so the whole clip is reproduced and edits stay coherent in time. Give it "
        "the whole clip (not a Meta Batch chunk): each run tunes on exactly the frames it gets. Frames without a "
        "face are left out and pass through Video Edit unchanged."
    )
    SEARCH_ALIASES = ["stit", "video pti", "edit video face", "stitch it in time"]
    CATEGORY = f"{common.CATEGORY}/video"
    RETURN_TYPES = (VIDEO_INVERSION, common.GENERATOR, "IMAGE")
    RETURN_NAMES = ("video_inversion", "tuned_generator", "aligned")
    OUTPUT_TOOLTIPS = (
        "The tuned generator, each frame's pivot and alignment: connect to Video Edit.",
        "The generator tuned on the clip (decode other latents with it).",
        "The aligned face crops that were tuned on (frames with a face only).",
    )
    FUNCTION = "tune"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "images": common.link_input("IMAGE", "Every frame of the clip, in order (Get Video Components)."),
                "tune_steps": common.int_input(
                    FAST.tune_steps,
                    1,
                    5000,
                    "Most tuning passes over all frames; stops once every frame is reproduced.",
                ),
                "stop_at_psnr": common.float_input(
                    FAST.target_psnr, 0.0, 60.0, 0.5, "Stop once every frame is this close, in dB PSNR (0: every step)."
                ),
                "smooth_center": common.float_input(
                    FAST.sigma_center, 0.0, 20.0, 0.5, "Gaussian smoothing of the crop centre over time, in frames."
                ),
                "smooth_size": common.float_input(
                    FAST.sigma_size, 0.0, 20.0, 0.5, "Gaussian smoothing of the crop size and angle, in frames."
                ),
                "detector": common.combo_input(DETECTORS, "Landmark detector (auto: MTCNN).", default="auto"),
                "seed": common.SEED_INPUT,
            },
            "optional": {
                "encoder": common.link_input(ENCODER, "Start each frame's pivot from this encoder (much faster)."),
            },
        }

    def tune(
        self, generator, images, tune_steps, stop_at_psnr, smooth_center, smooth_size, detector, seed, encoder=None
    ):
        G = generator
        frames = comfy_to_frames(images)
        settings = VideoSettings(
            sigma_center=smooth_center,
            sigma_size=smooth_size,
            tune_steps=tune_steps,
            target_psnr=stop_at_psnr,
            seed=seed,
        )
        net = TUNING_PRESETS[settings.preset].lpips_net
        lpips = common.ensure_lpips(net, common.compute_device())
        batch = TUNING_PRESETS[settings.preset].batch_size
        extra = [encoder] if encoder is not None else []
        managed_models.use(G, *lpips, *extra, memory_required=optimisation_bytes(G, batch, net, tunes_weights=True))
        progress = common.NodeProgress(stages=2)

        def stage(name: str, total: int):
            if name == "tuning":
                progress.next_stage()
            return progress

        with torch.inference_mode(False), torch.enable_grad():
            inversion = invert_clip(
                G, frames, settings=settings, encoder=encoder, detector=detector, store=common.weight_store(),
                stage_progress=stage,
            )  # fmt: skip
        inversion.tuned = inversion.tuned.eval()
        managed_models.use(inversion.tuned)
        skipped = inversion.report["frames_without_face"]
        if skipped:
            log.warning("PTI video: no face in frames %s; they pass through unchanged", skipped)
        return (inversion, inversion.tuned, bchw_to_comfy(inversion.crops * 2 - 1))


class VideoEdit:
    DESCRIPTION = (
        "Video PTI, step 2: the same edit on every frame's pivot, decoded with the clip's tuned generator and pasted "
        "back into the frames (optionally with stitching tuning, which hides the seam). Works on any run of frames: "
        "set frame_offset to where this batch starts in the clip that Video Tune saw (Meta Batch chunks)."
    )
    SEARCH_ALIASES = ["stit", "edit video", "video paste back"]
    CATEGORY = f"{common.CATEGORY}/video"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = (
        "The edited frames: same count, size and order as the input (frames without a face unchanged).",
        "Where each frame was changed (1 = the edited face, 0 = the original pixels).",
    )
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_inversion": common.link_input(VIDEO_INVERSION, "From Video Tune (PTI)."),
                "images": common.link_input("IMAGE", "The frames to edit: the clip, or a chunk of it."),
                "direction": common.DIRECTION_INPUT,
                "strength": common.float_input(2.0, -50.0, 50.0, 0.1, "How far to move every frame's pivot."),
                "layer_start": common.int_input(-1, -1, 63, "First w layer to edit; both -1: the direction's own."),
                "layer_end": common.int_input(-1, -1, 64, "Stop before this w layer; -1 = through the last."),
                "frame_offset": common.int_input(
                    0, 0, 1_000_000, "Index in the tuned clip of this batch's first frame."
                ),
                "stitch_steps": common.int_input(
                    0, 0, 1000, "Stitching tuning per frame (0 = off; ~100 hides the seam, slower)."
                ),
                "feather": common.float_input(FAST.feather, 0.01, 0.3, 0.01, "Soft edge of the paste mask."),
            }
        }

    def edit(self, video_inversion: ClipInversion, images, direction, strength, layer_start, layer_end, frame_offset,
             stitch_steps, feather):  # fmt: skip
        frames = comfy_to_frames(images)
        tuned = video_inversion.tuned
        layers = layer_range(tuned.num_ws, layer_start, layer_end)
        managed_models.use(tuned)
        settings = VideoSettings(stitch_steps=stitch_steps, feather=feather)
        progress = common.NodeProgress()
        with torch.inference_mode(False):
            out, masks, _report = edit_clip(
                video_inversion, frames, direction_edit(direction, strength, layers), offset=frame_offset,
                settings=settings, progress=progress,
            )  # fmt: skip
        return (out.permute(0, 2, 3, 1).contiguous(), masks)


NODE_CLASS_MAPPINGS = {"PTI_VideoTune": VideoTune, "PTI_VideoEdit": VideoEdit}
NODE_DISPLAY_NAME_MAPPINGS = {"PTI_VideoTune": "Video Tune (PTI)", "PTI_VideoEdit": "Video Edit (PTI)"}

"""Video editing against ground truth: a synthetic clip whose true alignment, true edit and identity are known.

The clip (``pti.synthetic.clips.make_clip``) is the renderer's face carrying a detail the embedded model cannot draw
(a tattoo by default), turning its head and smiling while it moves, grows and tilts over a drifting background;
"detected" landmarks are the true ones plus Gaussian noise. Three ways to edit it are compared with the renderer's
own edited clip:

- **per-frame PTI**: every frame aligned on its own (no smoothing), inverted with its own pivot and its own tuned
  generator (``pti.invert``, the encoder start of the main job), edited and pasted back;
- **video**: ``pti.video``: smoothed alignment, encoder pivots, one generator tuned on all frames, the same edit,
  paste-back;
- **video + stitching**: the same, with stitching tuning per frame.

Printed (and written with ``--json``): alignment jitter (the frame-to-frame change of the crop's error) and error
against the true crop path, raw vs smoothed; reconstruction PSNR of
the tuned clip vs its untuned pivots, then per method: PSNR to the true edited frames (whole frame and the pasted
region), flicker (how much the frame-to-frame change differs from the true edited clip's, in the pasted region),
TL-ID / TG-ID (identity similarity of adjacent / all frame pairs divided by the same on the source clip; identity
from the attribute regressor's identity attributes of the aligned faces), the largest change outside the paste mask,
and the seam's gradient energy relative to the source. ``--grid`` writes source / truth / each method, every second
frame.

    python benchmarks/bench_video.py --frames 16 --grid docs/images/video_truth.png --json video.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.align import crop_with_alignment, ffhq_alignment, paste_back  # noqa: E402
from pti.checkpoints import load_generator  # noqa: E402
from pti.directions import default_directions  # noqa: E402
from pti.edit import apply_direction  # noqa: E402
from pti.encoder import load_encoder  # noqa: E402
from pti.image import GeneratorImages, to_unit  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.metrics import psnr  # noqa: E402
from pti.pipeline import invert  # noqa: E402
from pti.synthetic import clips  # noqa: E402
from pti.video import (  # noqa: E402
    VideoSettings,
    direction_edit,
    edit_clip,
    invert_clip,
    outside_mask_change,
    seam_gradient_ratio,
    smooth_alignments,
    temporal_flicker,
)


def per_frame_pti(G, encoder, clip, direction, strength: float, settings: VideoSettings):
    """Every frame on its own: its own (unsmoothed) alignment, pivot, tuned generator, edit and paste-back."""
    out, masks, seconds = [], [], 0.0
    for frame, points in zip(clip.frames, clip.landmarks):
        alignment = ffhq_alignment(points, clip.alignments[0].source_size, G.img_resolution)
        crop = crop_with_alignment(frame, alignment)
        started = time.perf_counter()
        result = invert(
            G, GeneratorImages(crop[None] * 2 - 1), init=encoder, steps_tune=settings.tune_steps,
            target_psnr=settings.target_psnr, seed=settings.seed,
        )  # fmt: skip
        seconds += time.perf_counter() - started
        edited = to_unit(synthesize(result.tuned, apply_direction(result.pivot, direction, strength)))[0]
        pasted, mask = paste_back(frame, edited, alignment, settings.feather)
        out.append(pasted[0])
        masks.append(mask)
    return torch.stack(out), torch.stack(masks), seconds


def psnr_unit(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of 0..1 pixels, over whatever ``a`` and ``b`` hold."""
    return float(-10 * torch.log10((a - b).square().mean()))


def scores(edited, masks, clip, truth_frames, edited_attribute: str) -> dict:
    """Every per-method figure of the table."""
    region = masks > 0
    face_psnr = [psnr_unit(e[:, r], t[:, r]) for e, t, r in zip(edited, truth_frames, region)]
    crops = torch.stack([crop_with_alignment(f, a) for f, a in zip(edited, clip.alignments)])
    source_crops = torch.stack([crop_with_alignment(f, a) for f, a in zip(clip.frames, clip.alignments)])
    local, overall = clips.temporal_identity(clips.identity_embeddings(crops, (edited_attribute,)))
    local_src, overall_src = clips.temporal_identity(clips.identity_embeddings(source_crops, (edited_attribute,)))
    return {
        "psnr_frame": round(float(np.mean([psnr_unit(e, t) for e, t in zip(edited, truth_frames)])), 2),
        "psnr_region": round(float(np.mean(face_psnr)), 2),
        "flicker": round(temporal_flicker(edited, truth_frames, masks), 4),
        "tl_id": round(local / local_src, 4),
        "tg_id": round(overall / overall_src, 4),
        "outside_mask_change": outside_mask_change(edited, clip.frames, masks),
        "seam_gradient_ratio": round(seam_gradient_ratio(edited, clip.frames, masks), 3),
    }


def save_grid(rows: dict[str, torch.Tensor], path: Path, step: int = 2) -> None:
    from PIL import Image, ImageDraw

    strips = [torch.cat(list(frames[::step]), dim=2) for frames in rows.values()]
    grid = torch.cat(strips, dim=1)
    picture = Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    picture = picture.resize((picture.width * 2, picture.height * 2), Image.Resampling.NEAREST)  # readable faces
    draw = ImageDraw.Draw(picture)
    height = rows[next(iter(rows))].shape[-2] * 2
    for index, label in enumerate(rows):
        draw.text((4, index * height + 2), label, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", default="tattoo", help="detail the model cannot draw (tattoo, face_paint, none)")
    parser.add_argument("--direction", default="smile")
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--noise", type=float, default=1.0, help="landmark noise, frame pixels (standard deviation)")
    parser.add_argument("--tune-steps", type=int, default=150)
    parser.add_argument("--stitch-steps", type=int, default=50)
    parser.add_argument("--no-baseline", action="store_true", help="skip per-frame PTI (the slow part)")
    parser.add_argument("--grid", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    G, encoder = load_generator(), load_encoder(None)
    direction = default_directions()[args.direction]
    clip = clips.make_clip(
        args.frames, args.seed, kind=None if args.kind == "none" else args.kind, landmark_noise=args.noise
    )
    truth_frames, _ = clip.edited(args.direction)
    settings = VideoSettings(tune_steps=args.tune_steps)
    results: dict = {"settings": vars(args) | {"grid": str(args.grid), "json": str(args.json)}}

    smoothed, raw = smooth_alignments(list(clip.landmarks), clip.alignments[0].source_size, G.img_resolution)
    results["alignment"] = {}
    for name, measure in (("jitter", clips.alignment_jitter), ("error", clips.alignment_errors)):
        raw_centre, raw_size = measure(raw, clip.alignments)
        smooth_centre, smooth_size = measure(smoothed, clip.alignments)
        results["alignment"][name] = {
            "raw": {"centre_px": round(raw_centre, 3), "size": round(raw_size, 4)},
            "smoothed": {"centre_px": round(smooth_centre, 3), "size": round(smooth_size, 4)},
            "centre_ratio": round(smooth_centre / raw_centre, 3),
            "size_ratio": round(smooth_size / raw_size, 3),
        }

    started = time.perf_counter()
    inversion = invert_clip(G, clip.frames, list(clip.landmarks), settings, encoder=encoder)
    invert_seconds = time.perf_counter() - started
    crops = torch.stack([crop_with_alignment(clip.frames[i], a) for i, a in enumerate(inversion.alignments)])
    pivot_psnr = float(psnr(synthesize(G, inversion.pivots), crops * 2 - 1).mean())
    tuned_psnr = float(psnr(synthesize(inversion.tuned, inversion.pivots), crops * 2 - 1).mean())
    results["reconstruction"] = {"pivots": round(pivot_psnr, 2), "tuned": round(tuned_psnr, 2)}

    edit = direction_edit(direction, args.strength)
    rows = {"source": clip.frames, "truth": truth_frames}
    methods = {}
    if not args.no_baseline:
        frames, masks, seconds = per_frame_pti(G, encoder, clip, direction, args.strength, settings)
        methods["per-frame PTI"] = (frames, masks, seconds)
    started = time.perf_counter()
    frames, masks, _ = edit_clip(inversion, clip.frames, edit, settings=settings)
    methods["video"] = (frames, masks, invert_seconds + time.perf_counter() - started)
    stitched = VideoSettings(tune_steps=args.tune_steps, stitch_steps=args.stitch_steps)
    started = time.perf_counter()
    frames, masks, _ = edit_clip(inversion, clip.frames, edit, settings=stitched)
    methods["video + stitching"] = (frames, masks, invert_seconds + time.perf_counter() - started)
    results["methods"] = {}
    for name, (frames, masks, seconds) in methods.items():
        results["methods"][name] = scores(frames, masks, clip, truth_frames, args.direction) | {
            "seconds": round(seconds, 1)
        }
        rows[name] = frames

    other = clips.make_clip(args.frames, args.seed + 100, kind=None)
    own = clips.identity_embeddings(
        torch.stack([crop_with_alignment(f, a) for f, a in zip(clip.frames, clip.alignments)])
    )
    foreign = clips.identity_embeddings(
        torch.stack([crop_with_alignment(f, a) for f, a in zip(other.frames, other.alignments)])
    )
    results["identity_check"] = {
        "same_person_mean_similarity": round(clips.temporal_identity(own)[1], 4),
        "other_person_mean_similarity": round(float((own @ foreign.T).mean()), 4),
    }
    print(json.dumps(results, indent=1))
    if args.grid:
        save_grid(rows, args.grid)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

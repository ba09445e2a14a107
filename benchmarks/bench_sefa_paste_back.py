"""SeFa directions of the default model and the geometry of align + paste-back on the example photo.

SeFa: every component of ``pti.discovery.sefa`` (all layers) — how far the vectors are from orthonormal (largest
entry of ``|V·Vᵀ − I|``) and, on ``--samples`` sampled w, the mean absolute pixel change (0..1 scale) that strength
``--strength`` along each component makes to G(w); printed for the first three, the last three and all components.

Paste-back: the example photo aligned with its hand-measured landmarks (``align_face``), the landmarks mapped into
the crop and back (largest error, photo pixels); a stand-in edit (the crop's negative) pasted back with
``paste_back``: the share of photo pixels outside the mask and how many of them changed; and the unedited crop pasted
back: mean absolute error inside the mask (0..1 scale) — what resampling alone costs; where a landmark detector is
installed, how far the hand-measured landmarks land from their places in the manual crop when the detector's crop is
used instead (largest coordinate difference, share of the crop size).

    python benchmarks/bench_sefa_paste_back.py
    python benchmarks/bench_sefa_paste_back.py --samples 64 --strength 5 --crop-size 256

Prints two markdown tables; writes JSON to ``benchmarks/results/``.
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

from pti.align import align_face, available_detectors, parse_landmarks, paste_back  # noqa: E402
from pti.checkpoints import load_generator  # noqa: E402
from pti.discovery import sample_w, sefa  # noqa: E402
from pti.edit import apply_direction  # noqa: E402
from pti.image import load_image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PHOTO = "workflows/pti_example_photo.jpg"
# eye centres, nose tip, mouth corners (viewer's left first), measured by hand; the same as the docs' CLI example
PHOTO_LANDMARKS = "203,101,247,104,225,127,203.5,140.5,245,140.5"


@torch.no_grad()
def sefa_figures(samples: int, strength: float, seed: int) -> dict:
    G = load_generator()
    directions = sefa(G, G.w_dim, use_cache=False)
    vectors = torch.stack([d.vector.double() for d in directions])
    ws = sample_w(G, samples, seed).float()[:, None].repeat(1, G.num_ws, 1)
    base = G.synthesis(ws, noise_mode="const")
    change = [
        float((G.synthesis(apply_direction(ws, d, strength), noise_mode="const") - base).abs().mean() / 2)
        for d in directions
    ]
    return {
        "components": len(directions),
        "orthonormality_error": float((vectors @ vectors.T - torch.eye(len(directions))).abs().max()),
        "change": change,
    }


def paste_back_figures(photo: Path, landmarks: str, crop_size: int) -> dict:
    image = load_image(photo)
    points = parse_landmarks(landmarks)
    crop, alignment = align_face(image, crop_size, landmarks=points)
    round_trip = float(np.abs(alignment.to_source(alignment.to_crop(points)) - points).max())
    edited, mask = paste_back(image, 1.0 - crop, alignment)
    outside = mask == 0
    unedited, _ = paste_back(image, crop, alignment)
    inside = mask > 0
    detector = (available_detectors() or [None])[0]
    detected = None
    if detector is not None:  # where the hand-measured landmarks land in the detector's crop vs in the manual one
        _, automatic = align_face(image, crop_size, detector=detector)
        detected = float(np.abs(automatic.to_crop(points) - alignment.to_crop(points)).max() / crop_size)
    return {
        "photo_size": list(image.shape[-2:]),
        "round_trip_px": round_trip,
        "outside_share": float(outside.float().mean()),
        "outside_changed": int((edited[0] != image)[:, outside].sum()),
        "unedited_error_inside": float((unedited[0] - image).abs()[:, inside].mean()),
        "detector": detector,
        "detected_vs_manual": detected,
    }


def markdown(s: dict, p: dict, args: argparse.Namespace) -> str:
    change = s["change"]
    count = s["components"]
    lines = [
        f"SeFa, default model, all layers: {count} components, largest |V·Vᵀ − I| {s['orthonormality_error']:.1e}; "
        f"mean absolute pixel change (0..1) at strength {args.strength:g} over {args.samples} sampled w:\n",
        "| components | mean pixel change |",
        "|---|---:|",
        f"| first three (0–2) | {sum(change[:3]) / 3:.3f} |",
        f"| last three ({count - 3}–{count - 1}) | {sum(change[-3:]) / 3:.3f} |",
        f"| all {count} | {sum(change) / count:.3f} |",
        f"\nPaste-back, {args.photo} ({p['photo_size'][1]}×{p['photo_size'][0]}), hand-measured landmarks, "
        f"{args.crop_size} px crop:\n",
        "| measure | value |",
        "|---|---:|",
        f"| landmarks photo → crop → photo, largest error | {p['round_trip_px']:.1e} px |",
        f"| photo pixels outside the mask | {p['outside_share']:.1%} |",
        f"| of those, changed by pasting an edit back | {p['outside_changed']} |",
        f"| unedited crop pasted back: mean absolute error inside the mask (0..1) | {p['unedited_error_inside']:.4f} |",
    ]
    if p["detector"] is not None:
        lines.append(
            f"| {p['detector']} detector instead of the hand-measured landmarks: largest shift of those landmarks in "
            f"the crop | {p['detected_vs_manual']:.1%} of the crop |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="sampled w for the SeFa image change")
    parser.add_argument("--strength", type=float, default=3.0, help="SeFa edit strength")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled w")
    parser.add_argument("--photo", default=PHOTO, help="photo for paste-back, relative to the repository root")
    parser.add_argument("--landmarks", default=PHOTO_LANDMARKS, help="its five landmarks, x1,y1,...,x5,y5")
    parser.add_argument("--crop-size", type=int, default=64, help="aligned crop size (the default model's 64 px)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared, busy CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = sefa_figures(args.samples, args.strength, args.seed)
    p = paste_back_figures(REPO / args.photo, args.landmarks, args.crop_size)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_sefa_paste_back_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "sefa": s, "paste_back": p}, indent=2))
    print(markdown(s, p, args))


if __name__ == "__main__":
    main()

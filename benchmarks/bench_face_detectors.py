"""Face detectors' five landmarks on real photos, against dlib's 68-point model and hand-placed points.

For each photo and each detector (MTCNN, the default; dlib's HOG detector with the 5-point model; kornia's YuNet
when its weights are on disk) it reports the landmark error against a reference, as a fraction of the eye distance
(NME), and what that error does to the FFHQ crop: the largest shift of the crop's corners, as a fraction of the crop
side. The reference is dlib's 68-point shape model (eye centres = mean of each eye's six contour points, nose tip,
mouth corners), and for the astronaut the points placed by hand in tests/test_align.py.

    python benchmarks/bench_face_detectors.py [--photos DIR] [--json out.json]

Needs ``dlib-bin`` and ``face_recognition_models`` (requirements-dev.txt) for the 68-point reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pti import align  # noqa: E402
from pti.image import photo_pixels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT_BY_HAND = [(203.0, 101.0), (247.0, 104.0), (225.0, 127.0), (203.5, 140.5), (245.0, 140.5)]
CROP = 1024


def dlib68_landmarks(pixels: np.ndarray) -> np.ndarray | None:
    """Five points from dlib's 68-point model on the largest HOG detection, or None when it finds no face."""
    import importlib.util

    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    model = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))
    rects = list(detector(pixels, 1))
    if not rects:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(pixels, rect)
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
    # 36-41: the eye on the viewer's left; 42-47: the other; 30: nose tip; 48 / 54: mouth corners.
    return np.vstack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def crop_shift(points: np.ndarray, reference: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance between the FFHQ crop corners the two landmark sets give, as a fraction of the side."""
    corners = np.array([[0, 0], [CROP, 0], [0, CROP], [CROP, CROP]], dtype=np.float64) - 0.5
    ours = align.ffhq_alignment(points, size, CROP).to_source(corners)
    theirs = align.ffhq_alignment(reference, size, CROP).to_source(corners)
    side = np.linalg.norm(theirs[1] - theirs[0])
    return float(np.linalg.norm(ours - theirs, axis=1).max() / side)


def photos(extra: Path | None) -> dict[str, torch.Tensor]:
    from skimage import data

    found = {"astronaut": torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255}
    folders = [ROOT / "tests" / "data" / "photos"] + ([extra] if extra else [])
    for folder in folders:
        for path in sorted(folder.glob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                found[path.stem] = photo_pixels(path)[0]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder of more photos (one main face each)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    detectors = [d for d in ("mtcnn", "dlib", "kornia") if d in align.available_detectors()]
    rows = []
    for name, image in photos(args.photos).items():
        pixels = np.ascontiguousarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
        size = (image.shape[2], image.shape[1])
        references = {"dlib 68-point": dlib68_landmarks(pixels)}
        if name == "astronaut":
            references["by hand"] = np.array(ASTRONAUT_BY_HAND)
        for detector in detectors:
            start = time.perf_counter()
            try:
                faces, _ = align.detect_faces(image, detector)
            except align.AlignmentError:
                faces = []
            seconds = time.perf_counter() - start
            for label, reference in references.items():
                row = {"photo": name, "size": f"{size[0]}x{size[1]}", "detector": detector, "reference": label}
                row["seconds"] = round(seconds, 3)
                if not faces or reference is None:
                    row["found"] = False
                    rows.append(row)
                    continue
                points = faces[0].landmarks
                eye_distance = np.linalg.norm(reference[1] - reference[0])
                errors = np.linalg.norm(points - reference, axis=1) / eye_distance
                row.update(
                    found=True,
                    faces=len(faces),
                    nme_eyes=round(float(errors[:2].mean()), 4),
                    nme_mouth=round(float(errors[3:].mean()), 4),
                    nme_all=round(float(errors.mean()), 4),
                    crop_shift=round(crop_shift(points, reference, size), 4),
                )
                rows.append(row)
    print("| photo | size | detector | reference | faces | NME eyes | NME mouth | NME 5 points | crop shift | s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r["found"]:
            cells = [r["photo"], r["size"], r["detector"], r["reference"], "0", "–", "–", "–", "–", str(r["seconds"])]
            print("| " + " | ".join(cells) + " |")
            continue
        print(
            f"| {r['photo']} | {r['size']} | {r['detector']} | {r['reference']} | {r['faces']} | {r['nme_eyes']:.3f} "
            f"| {r['nme_mouth']:.3f} | {r['nme_all']:.3f} | {r['crop_shift']:.3f} | {r['seconds']} |"
        )
    for detector in detectors:
        found = [r for r in rows if r["detector"] == detector and r["reference"] == "dlib 68-point" and r["found"]]
        if found:
            nme, mouth, shift = (np.mean([r[key] for r in found]) for key in ("nme_all", "nme_mouth", "crop_shift"))
            print(
                f"{detector}: mean over {len(found)} photos vs dlib 68-point: NME {nme:.3f}, mouth {mouth:.3f}, "
                f"crop shift {shift:.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

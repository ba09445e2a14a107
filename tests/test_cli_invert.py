"""The main job end to end: `python -m pti invert` on the example photo with the embedded model, small step counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pti.checkpoints import DEFAULT_MODEL_DIR, load_generator
from pti.cli import main
from pti.delta import load_delta
from pti.image import load_image
from pti.latent import Latent, synthesize
from pti.metrics import psnr
from tools.build_workflows import EXAMPLE_IMAGE, WORKFLOW_DIR

EXAMPLE = WORKFLOW_DIR / EXAMPLE_IMAGE  # the photo of the README main job


@pytest.fixture(scope="module")
def inverted(tmp_path_factory):
    if not (DEFAULT_MODEL_DIR / "generator.safetensors").is_file():
        pytest.skip("the embedded default model is not shipped in this checkout")
    out = tmp_path_factory.mktemp("invert")
    argv = ["invert", str(EXAMPLE), "--out", str(out), "--steps-pivot", "8", "--steps-tune", "12", "--device", "cpu"]
    assert main(argv) == 0
    return out


def test_invert_writes_every_file_and_tuning_helps(inverted):
    names = ["input.png", "pivot.png", "tuned.png", "comparison.png", "pivot.safetensors", "tuned_delta.safetensors"]
    assert all((inverted / name).is_file() for name in names + ["metrics.json"])
    metrics = json.loads((inverted / "metrics.json").read_text())
    assert metrics["projection_steps"] == 8 and 0 < metrics["tuning_steps"] <= 12
    assert metrics["tuned"]["lpips_alex"] < metrics["pivot"]["lpips_alex"]
    assert metrics["tuned"]["psnr"] > metrics["pivot"]["psnr"] + 1
    # input.png is the photo itself at model resolution (centre square, area resize), not a washed-out copy.
    photo = Image.open(EXAMPLE).convert("RGB").resize((64, 64), Image.BOX)
    saved = np.asarray(Image.open(inverted / "input.png").convert("RGB"), np.float64)
    assert 10 * np.log10(255**2 / np.mean((saved - np.asarray(photo, np.float64)) ** 2)) >= 40


def test_outputs_reload_to_the_saved_images(inverted):
    base = load_generator()
    latent = Latent.load(inverted / "pivot.safetensors")
    assert latent.generator_hash == base.source_info["hash"] and latent.ws.shape == (1, base.num_ws, base.w_dim)
    tuned = load_delta(inverted / "tuned_delta.safetensors", base)
    saved = load_image(inverted / "tuned.png")[None] * 2 - 1
    assert float(psnr(synthesize(tuned, latent), saved)) > 40  # only 8-bit rounding apart
    assert not torch.equal(synthesize(base, latent), synthesize(tuned, latent))


def test_missing_photo_is_a_clear_error(tmp_path, capsys):
    assert main(["invert", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert "image file not found" in capsys.readouterr().err

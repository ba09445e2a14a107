"""PTI's two promises on a real photo, with the main job's own defaults and the embedded model.

Measured against the photo a user gave (read and resized here with PIL, independently of the pack), never only
against the pack's internal target: the tuned generator reproduces the person, and an edit still moves them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pti.checkpoints import load_generator
from pti.directions import default_directions
from pti.edit import strength_sweep
from pti.encoder import load_encoder
from pti.latent import synthesize
from pti.metrics import psnr, ssim
from pti.pipeline import invert
from pti.synthetic import faces
from pti.synthetic.attributes import load_regressor, predict_attributes
from tools.build_workflows import EXAMPLE_IMAGE, WORKFLOW_DIR


def _photo_at(resolution: int) -> torch.Tensor:
    """The example photo as a user has it: centre square, area resize (PIL's box filter), in [-1, 1]."""
    pil = Image.open(WORKFLOW_DIR / EXAMPLE_IMAGE).convert("RGB")
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    square = pil.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BOX)
    return torch.from_numpy(np.asarray(square, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


@pytest.fixture(scope="module", params=["encoder", "search"])
def main_job(request):
    """The README main job's defaults: the CLI starts from the shipped encoder (``--init auto``); the library's
    ``invert`` without ``init`` from the fast preset's search. Both must keep both promises."""
    G = load_generator()
    init = load_encoder() if request.param == "encoder" else None
    return G, invert(G, WORKFLOW_DIR / EXAMPLE_IMAGE, init=init)


def test_the_tuned_generator_reproduces_the_photo(main_job):
    G, result = main_job
    photo = _photo_at(G.img_resolution)
    assert float(psnr(result.pivot_image, photo)) < 15  # projection alone cannot: the photo is out of domain
    assert float(psnr(result.tuned_image, photo)) >= 27
    assert float(ssim(result.tuned_image, photo)) >= 0.85


def test_edits_still_move_the_person_after_tuning(main_job):
    G, result = main_job
    regressor = load_regressor()
    strengths = [-3.0, 0.0, 3.0]
    # Measured with the fast preset: glasses keeps its whole W-only regressor change (0.99 -> 0.99); yaw keeps only
    # 0.26 and smears rather than turns the head (docs/benchmarks.md), so yaw is held only to moving the picture.
    for name, least_kept in (("glasses", 0.7),):
        k = faces.ATTRIBUTE_NAMES.index(name)
        sweep = strength_sweep(result.pivot, default_directions()[name], strengths)
        before, after = synthesize(G, sweep), synthesize(result.tuned, sweep)
        assert torch.allclose(after[1:2], result.tuned_image, atol=1e-4)  # strength 0 is the reconstruction
        change_before = predict_attributes(before, regressor)[:, k]
        change_after = predict_attributes(after, regressor)[:, k]
        slope_before = float(change_before[2] - change_before[0])
        slope_after = float(change_after[2] - change_after[0])
        assert slope_before > 0.2 and slope_after >= least_kept * slope_before, (name, slope_before, slope_after)
    yaw = synthesize(result.tuned, strength_sweep(result.pivot, default_directions()["yaw"], strengths))
    moved = (yaw[[0, 2]] - result.tuned_image).abs().mean(dim=(1, 2, 3))
    assert (moved > 0.03).all(), moved  # the head-turn edit visibly changes the reconstructed person

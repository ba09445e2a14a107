"""A CI-sized run of the ground-truth editing benchmark (``benchmarks/bench_edit_truth.py``): one held-out renderer
face carrying a tattoo the embedded model cannot draw, the README main job unchanged, two shipped directions, each
compared with the renderer's true edit of the same face (same tattoo).

It asserts the issue's inequalities on the directions that meet them today (hair_length and roll); the directions
that do not yet (glasses, smile, eye_openness, yaw) and the detail kept under an edit are measured by the benchmark
and reported in ``docs/edit-truth.md``.
"""

from __future__ import annotations

import pytest
import torch

from pti.checkpoints import load_generator
from pti.directions import default_directions
from pti.encoder import load_encoder
from pti.image import GeneratorImages
from pti.latent import synthesize
from pti.pipeline import invert
from pti.synthetic import edit_truth

SEED = 32_000  # the benchmark's first tattoo face (held out: the model, encoder and directions saw seeds < 10_000)


@pytest.fixture(scope="module")
def tuned_face():
    torch.manual_seed(0)
    G = load_generator("default")
    face = edit_truth.held_out_faces(2, "tattoo", SEED, G.img_resolution)[0]
    result = invert(G, GeneratorImages(face.photo), init=load_encoder(None, face.photo.device))
    return G, face, result


def test_the_truth_is_a_real_edit_that_keeps_the_detail():
    face = edit_truth.held_out_faces(2, "tattoo", SEED, 64)[0]
    before, after = edit_truth.true_edit(face, "hair_color")
    plain_before, plain_after = edit_truth.true_edit(face, "hair_color", with_detail=False)
    region = edit_truth.edit_region(before, after)
    tattoo = edit_truth.edit_region(plain_before, before)
    assert torch.equal(face.photo, edit_truth.quantize(before))  # the photo is the 8-bit copy of ``before``
    assert 0.05 < region.float().mean() < 0.6  # the edit changes part of the picture, not all of it
    assert tattoo.float().mean() > 0.02  # the detail is there to lose
    assert edit_truth.region_psnr(after, plain_after, tattoo & ~region) < 20  # and the truth still carries it


@pytest.mark.parametrize("direction_name", ["hair_length", "roll"])
def test_pti_edit_approaches_the_truth(tuned_face, direction_name):
    G, face, result = tuned_face
    scores, _ = edit_truth.score_direction(
        G,
        face,
        default_directions()[direction_name],
        {"pti": (result.pivot, result.tuned), "w_only": (result.pivot, G)},
    )
    in_domain_gain, pti, w_only = scores["in_domain_gain"], scores["pti"], scores["w_only"]
    everywhere = torch.ones_like(face.photo[:, :1], dtype=torch.bool)
    assert edit_truth.region_psnr(synthesize(result.tuned, result.pivot), face.photo, everywhere) >= 30
    assert in_domain_gain > 2  # the direction does move the renderer's attribute in-domain
    assert pti["gain_in"] >= 0.7 * in_domain_gain
    assert pti["psnr_out"] >= 27
    assert pti["psnr_all"] >= w_only["psnr_all"] + 1
    assert pti["psnr_detail"] > w_only["psnr_detail"] + 3  # tuning keeps part of the tattoo that W-only cannot draw

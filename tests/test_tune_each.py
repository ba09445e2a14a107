"""pivotal_tune_each: N photos, each its own tuned generator, in one forward/backward per step, equal to N
sequential ``pivotal_tune`` runs.

Tolerance (fp32, tiny 32 px generator, 12 Adam steps at lr 1e-3): every weight within 1e-4 of the sequential run's
(measured: 7e-6; batched and single convolutions sum in another order) while tuning moves them by 4e-3 to 1.2e-2,
and the same stopping step and final PSNR within 1e-3 dB.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_generator, tensor_digest

from pti.image import GeneratorImages
from pti.latent import Latent
from pti.tune import pivotal_tune, pivotal_tune_each

STEPS = 12
TARGET_PSNR = 13.0  # the first photo (G's own rendering) passes it after a few steps, the noise photos never


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 2 threads on a busy 2-core CPU ran ~10x slower


@pytest.fixture(scope="module")
def problem():
    G = make_generator()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, 32, generator=generator), None)
        targets = torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
        targets[0] = G.synthesis(ws[:1], noise_mode="const")[0].clamp(-1, 1)
    return G, ws, targets


def test_batched_tuning_equals_sequential_runs_and_each_image_stops_on_its_own(problem):
    G, ws, targets = problem
    before = tensor_digest(G)
    batched = pivotal_tune_each(G, GeneratorImages(targets), Latent(ws), steps=STEPS, target_psnr=TARGET_PSNR)
    sequential = [
        pivotal_tune(
            G, GeneratorImages(targets[i : i + 1]), Latent(ws[i : i + 1]), steps=STEPS, target_psnr=TARGET_PSNR
        )
        for i in range(3)
    ]
    assert tensor_digest(G) == before
    steps = [tuned.tuning_info["steps"] for tuned in batched]
    assert steps == [tuned.tuning_info["steps"] for tuned in sequential]
    assert 0 < steps[0] < STEPS and steps[1:] == [STEPS, STEPS]  # the first stopped early, the others ran on
    for one, other in zip(batched, sequential):
        assert one.tuning_info["final_psnr"][0] == pytest.approx(other.tuning_info["final_psnr"][0], abs=1e-3)
        moved = max((a - b).abs().max().item() for a, b in zip(other.parameters(), G.parameters()))
        apart = max((a - b).abs().max().item() for a, b in zip(one.parameters(), other.parameters()))
        # The early-stopped image shows the update was masked: one more Adam step would move it by ~lr = 1e-3.
        assert moved > 2e-3 and apart < 1e-4
        assert one.pti_lineage == other.pti_lineage


def test_options_it_cannot_batch_are_refused(problem):
    G, ws, targets = problem
    with pytest.raises(ValueError, match="need pivotal_tune"):
        pivotal_tune_each(G, GeneratorImages(targets), Latent(ws), steps=1, rank=4)
    with pytest.raises(ValueError, match="one pivot per image"):
        pivotal_tune_each(G, GeneratorImages(targets), Latent(torch.cat([ws, ws])[:2]), steps=1)

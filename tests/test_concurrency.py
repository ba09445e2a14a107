"""Two prompts sharing one loaded generator: results are independent of each other and of running side by side.

ComfyUI keeps a loaded generator in its cache and hands the same object to every prompt; a server can also run
work from several threads. Projection, tuning and decoding run here in two threads on ONE shared generator and must
give exactly what each gives alone, leaving the generator (weights, buffers, w_avg, noise buffers, requires_grad
flags, .grad) as it was.
"""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_generator, tensor_digest

from pti.image import GeneratorImages
from pti.latent import Latent, synthesize
from pti.projection import project
from pti.tune import pivotal_tune

STEPS = 3


@pytest.fixture(scope="module")
def G():
    return make_generator(resolution=32)


def _photo(G, seed):
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)), None)
        return GeneratorImages(G.synthesis(ws, noise_mode="const"))


def _prompt(G, seed):
    """One PTI prompt: project, tune on the pivot, decode the pivot with the tuned generator."""
    image = _photo(G, seed)
    latent = project(G, image, steps=STEPS, seed=seed, preset="reference", num_w_samples=64)
    tuned = pivotal_tune(G, image, latent, steps=STEPS, lpips_threshold=0.0, seed=seed)
    return latent.ws, tensor_digest(tuned), synthesize(tuned, latent)


def _state(G):
    return (
        tensor_digest(G),
        [p.requires_grad for p in G.parameters()],
        [p.grad is None for p in G.parameters()],
        G.training,
    )


def test_two_prompts_in_threads_on_one_generator_match_running_alone(G):
    before = _state(G)
    alone = {seed: _prompt(G, seed) for seed in (1, 2)}
    results, errors = {}, []

    def worker(seed):
        try:
            results[seed] = _prompt(G, seed)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for seed in (1, 2):
        ws, tuned_digest, image = results[seed]
        assert torch.equal(ws, alone[seed][0]), f"prompt {seed}: projection differs when run beside another"
        assert tuned_digest == alone[seed][1], f"prompt {seed}: tuned generator differs"
        assert torch.equal(image, alone[seed][2])
    assert not torch.equal(alone[1][0], alone[2][0])  # the two prompts really are different work
    assert _state(G) == before


def test_decoding_in_threads_while_another_prompt_tunes(G):
    latent = Latent(torch.randn(4, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0)), {}, "w", "", {})
    expected = synthesize(G, latent)
    image = _photo(G, 5)
    outputs = []

    def decode():
        for _ in range(5):
            outputs.append(synthesize(G, latent))

    tuner = threading.Thread(target=lambda: pivotal_tune(G, image, latent.select(0), steps=STEPS, lpips_threshold=0.0))
    decoder = threading.Thread(target=decode)
    tuner.start()
    decoder.start()
    tuner.join()
    decoder.join()
    assert len(outputs) == 5 and all(torch.equal(out, expected) for out in outputs)

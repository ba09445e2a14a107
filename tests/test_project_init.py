"""Projection from an initial latent (an encoder's output, a saved pivot, the previous frame) and zero-step pivots."""

from __future__ import annotations

import pytest
import torch
from test_project import FAST, identifiable_generator, render_w

import pti.projection
from pti.image import GeneratorImages
from pti.latent import Latent, synthesize
from pti.metrics import lpips_distance
from pti.projection import project


@pytest.fixture(scope="module")
def scene():
    G = identifiable_generator()
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(11))
    w_true = G.mapping(z, None).detach()
    return G, w_true, render_w(G, w_true[:, :1])


def test_zero_steps_returns_the_initial_latent_without_lpips(scene, monkeypatch):
    G, w_true, target = scene

    def no_lpips(*args, **kwargs):
        raise AssertionError("an encoder-only pivot must not need LPIPS")

    monkeypatch.setattr(pti.projection, "load_lpips", no_lpips)
    init = w_true + 0.1 * torch.randn(w_true.shape, generator=torch.Generator().manual_seed(1))
    pivot = project(G, GeneratorImages(target), steps=0, init=init)
    assert torch.equal(pivot.ws, init) and pivot.space == "w+" and pivot.meta["steps"] == 0
    assert pivot.generator_hash  # tied to G like any projected pivot
    # One row for all images is broadcast; a W latent stays W.
    single = project(G, GeneratorImages(target), steps=0, init=Latent(w_true[:1].clone(), space="w"))
    assert torch.equal(single.ws, w_true[:1].expand(2, -1, -1)) and single.space == "w"


def test_zero_steps_without_init_and_mismatched_inits_are_refused(scene):
    G, w_true, target = scene
    with pytest.raises(ValueError, match="steps=0 needs an initial latent"):
        project(G, GeneratorImages(target), steps=0)
    with pytest.raises(ValueError, match="3 latents for 2 images"):
        project(G, GeneratorImages(target), steps=0, init=torch.cat([w_true, w_true[:1]]))
    with pytest.raises(ValueError, match="different model"):
        project(G, GeneratorImages(target), steps=0, init=torch.zeros(2, G.num_ws + 1, G.w_dim))


def test_refining_from_a_near_start_beats_the_same_steps_from_w_avg(scene):
    """A warm start is the point: 10 steps from a perturbed true w end closer than 10 steps from w_avg, and closer
    than where they started."""
    G, w_true, target = scene
    target, w_true = target[:1], w_true[:1]
    w_avg = G.mapping.w_avg.view(1, 1, -1)
    init = w_true + 0.5 * (w_avg - w_true)  # half-way between w_avg and the answer
    warm = project(G, GeneratorImages(target), steps=10, init=init, init_candidates=0, **FAST)
    cold = project(G, GeneratorImages(target), steps=10, init_candidates=0, **FAST)
    start = render_w(G, init[:, :1])
    warm_d = float(lpips_distance(synthesize(G, warm), target))
    assert warm_d < float(lpips_distance(synthesize(G, cold), target))
    assert warm_d < float(lpips_distance(start, target))
    assert warm.meta["init"] == "latent" and warm.meta["start_lpips"] is None


def test_noise_maps_of_the_initial_latent_are_reused(scene):
    """The first step's learning rate is zero (ramp-up), so one step returns the start: its w and its noise."""
    _, w_true, target = scene
    G = identifiable_generator()
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.1)  # noise maps only take part when they reach the image
    rng = torch.Generator().manual_seed(3)
    noises = {}
    for name, layer in G.synthesis.noise_layers().items():
        noise = torch.randn(1, 1, layer.resolution, layer.resolution, generator=rng)
        noise = noise - noise.mean()
        noises[name] = noise / noise.square().mean().sqrt()  # already as projection renormalises them
    init = Latent(w_true[:1].clone(), noises, space="w")
    pivot = project(G, GeneratorImages(target[:1]), steps=1, init=init, **FAST)
    torch.testing.assert_close(pivot.ws, w_true[:1])
    assert pivot.noises.keys() == noises.keys() and noises
    for name, noise in noises.items():
        torch.testing.assert_close(pivot.noises[name], noise, atol=1e-5, rtol=1e-5)
    fresh = project(G, GeneratorImages(target[:1]), steps=1, init=Latent(w_true[:1].clone(), space="w"), **FAST)
    assert any(not torch.allclose(fresh.noises[name], noise) for name, noise in noises.items())


def test_without_steps_an_initial_latent_takes_the_presets_init_steps(scene):
    G, w_true, target = scene
    init = w_true[:1].clone()
    image = GeneratorImages(target[:1])
    assert project(G, image, init=init, preset="reference").meta["steps"] == 0  # the official use_e4e
    assert project(G, image, init=init, init_steps=2, **FAST).meta["steps"] == 2
    assert project(G, image, init=init, steps=3, **FAST).meta["steps"] == 3
    assert project(G, image, steps=2, **FAST).meta["init"] is None

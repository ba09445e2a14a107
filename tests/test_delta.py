"""Compact tuned results: deltas reproduce the tuned output, stay small, refuse the wrong base; full exports load."""

from __future__ import annotations

import pytest
import torch
from conftest import make_generator, tensor_digest

from pti.checkpoints import CheckpointError, load_generator, save_generator
from pti.delta import export_full, export_state_dict_pt, load_delta, read_delta_metadata, save_delta
from pti.latent import Latent, synthesize
from pti.metrics import psnr
from pti.networks import Generator
from pti.tune import pivotal_tune


@pytest.fixture(scope="module")
def tuned_pair():
    """A base generator big enough for low-rank storage to matter, and two tunings of it (full and rank 2)."""
    G = make_generator(channel_base=512, channel_max=64)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if "torgb.weight" in name:
                param.mul_(0.3)
    pivot = Latent(G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1).clone(), space="w")
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    options = dict(steps=6, lpips_threshold=0.0, lr=3e-3)
    full = pivotal_tune(G, target, pivot, preset="reference", **options)
    low = pivotal_tune(G, target, pivot, preset="fast", rank=2, **options)
    return G, pivot, full, low


def reload_psnr(tuned, base, pivot, path) -> float:
    return float(psnr(synthesize(load_delta(path, base), pivot), synthesize(tuned, pivot)))


def test_low_rank_tuning_round_trips_exactly_in_a_small_file(tuned_pair, tmp_path):
    base, pivot, _, low = tuned_pair
    delta = save_delta(low, base, tmp_path / "low.safetensors")
    full_size = save_generator(low, tmp_path / "full.safetensors").stat().st_size
    assert read_delta_metadata(delta)["mode"] == "lowrank" and read_delta_metadata(delta)["rank"] == "2"
    assert delta.stat().st_size * 5 < full_size
    assert reload_psnr(low, base, pivot, delta) >= 40
    reloaded = load_delta(delta, base)
    assert tensor_digest(reloaded.mapping) == tensor_digest(base.mapping)


def test_full_tuning_round_trips_in_fp16_and_low_rank_is_measurably_lossy(tuned_pair, tmp_path):
    base, pivot, full, _ = tuned_pair
    dense = save_delta(full, base, tmp_path / "dense.safetensors")
    assert read_delta_metadata(dense)["mode"] == "fp16"
    assert reload_psnr(full, base, pivot, dense) >= 40
    lossy = save_delta(full, base, tmp_path / "lossy.safetensors", mode="lowrank", rank=1)
    assert lossy.stat().st_size < dense.stat().st_size
    assert reload_psnr(full, base, pivot, lossy) < reload_psnr(full, base, pivot, dense)


def test_only_changed_tensors_are_stored(tuned_pair, tmp_path):
    base, _, full, _ = tuned_pair
    from pti.checkpoints import read_safetensors

    tensors, _ = read_safetensors(save_delta(full, base, tmp_path / "d.safetensors"))
    assert tensors and not any(name.startswith("mapping.") or "noise_const" in name for name in tensors)


def test_wrong_base_is_refused_naming_both_hashes(tuned_pair, tmp_path):
    base, _, _, low = tuned_pair
    delta = save_delta(low, base, tmp_path / "d.safetensors")
    other = make_generator(channel_base=512, channel_max=64, seed=1)
    digest = tensor_digest(other)
    with pytest.raises(CheckpointError) as info:
        load_delta(delta, other)
    meta = read_delta_metadata(delta)
    assert meta["base_hash"] in str(info.value) and low.tuning_info["base_hash"] in str(info.value)
    from pti.hashing import state_dict_hash

    assert state_dict_hash(other) in str(info.value) and tensor_digest(other) == digest
    not_a_delta = save_generator(base, tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="not a PTI delta"):
        load_delta(not_a_delta, base)


def test_full_exports_reload_identically(tuned_pair, tmp_path):
    base, pivot, full, _ = tuned_pair
    expected = synthesize(full, pivot)
    reloaded = load_generator(export_full(full, tmp_path / "tuned.safetensors"))
    assert torch.equal(synthesize(reloaded, pivot), expected)
    state = torch.load(export_state_dict_pt(full, tmp_path / "tuned.pt"), weights_only=True)
    fresh = Generator(**full.init_kwargs).eval()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(synthesize(fresh, pivot), expected)
